// Package source fetches a build's input into a directory: a git clone at a ref (with HTTPS
// token or SSH key credentials), an archive streamed by the client, or a single uploaded file.
// A build pod's init container runs it (kiln source), and so can kiln's S2I for git URLs.
package source

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/klauspost/compress/gzip"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kiln-build/kiln/internal/archive"
)

// Git is a repository to clone.
type Git struct {
	URI string
	// Ref is a branch, a tag or a commit; "" is the remote's HEAD.
	Ref string
	// AuthDir holds credential files, as a Kubernetes Secret mounts them: username and
	// password (an HTTPS token), or ssh-privatekey and optionally known_hosts.
	AuthDir string
}

// Commit describes the commit a clone checked out.
type Commit struct {
	ID                      string
	AuthorName, AuthorEmail string
	When                    time.Time // the author's date
	Message                 string
}

// Clone clones g into dest (which must not exist or be empty), checks out its ref and returns
// the commit checked out. Branches and tags are fetched shallow; a commit needs the history
// that contains it. dest gets the tree only, without .git.
func Clone(ctx context.Context, g Git, dest string, progress io.Writer) (Commit, error) {
	auth, err := g.auth()
	if err != nil {
		return Commit{}, err
	}
	opts := &git.CloneOptions{URL: g.URI, Auth: auth, Progress: progress, Depth: 1, Tags: git.NoTags}
	commit := isCommit(g.Ref)
	switch {
	case g.Ref == "":
	case commit:
		opts.Depth = 0
	case strings.HasPrefix(g.Ref, "refs/"):
		opts.ReferenceName = plumbing.ReferenceName(g.Ref)
		opts.SingleBranch = true
	default:
		opts.ReferenceName = plumbing.NewBranchReferenceName(g.Ref)
		opts.SingleBranch = true
	}
	repo, err := git.PlainCloneContext(ctx, dest, false, opts)
	if err != nil && opts.ReferenceName.IsBranch() {
		// Not a branch: try it as a tag.
		os.RemoveAll(dest)
		opts.ReferenceName = plumbing.NewTagReferenceName(g.Ref)
		repo, err = git.PlainCloneContext(ctx, dest, false, opts)
	}
	if err != nil {
		return Commit{}, fmt.Errorf("cloning %s at %q: %w", redact(g.URI), g.Ref, err)
	}
	if commit {
		wt, err := repo.Worktree()
		if err != nil {
			return Commit{}, err
		}
		if err := wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(g.Ref)}); err != nil {
			return Commit{}, fmt.Errorf("checking out %s in %s: %w", g.Ref, redact(g.URI), err)
		}
	}
	head, err := repo.Head()
	if err != nil {
		return Commit{}, fmt.Errorf("reading the cloned HEAD of %s: %w", redact(g.URI), err)
	}
	c := Commit{ID: head.Hash().String()}
	if obj, err := repo.CommitObject(head.Hash()); err == nil {
		c.AuthorName, c.AuthorEmail, c.When, c.Message = obj.Author.Name, obj.Author.Email, obj.Author.When, strings.TrimSpace(obj.Message)
	}
	// The build context is the tree, not the repository.
	if err := os.RemoveAll(filepath.Join(dest, ".git")); err != nil {
		return Commit{}, err
	}
	return c, nil
}

// isCommit reports a full hexadecimal commit id.
func isCommit(ref string) bool {
	if len(ref) != 40 {
		return false
	}
	for _, c := range ref {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// auth reads the credentials in g.AuthDir, if any.
func (g Git) auth() (transport.AuthMethod, error) {
	if g.AuthDir == "" {
		return nil, nil
	}
	read := func(name string) (string, bool, error) {
		data, err := os.ReadFile(filepath.Join(g.AuthDir, name))
		if errors.Is(err, os.ErrNotExist) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("reading git credentials: %w", err)
		}
		return strings.TrimRight(string(data), "\n"), true, nil
	}
	if key, ok, err := read("ssh-privatekey"); err != nil {
		return nil, err
	} else if ok {
		user := "git"
		if u, err := url.Parse(g.URI); err == nil && u.User != nil {
			user = u.User.Username()
		}
		auth, err := gitssh.NewPublicKeys(user, []byte(key+"\n"), "")
		if err != nil {
			return nil, fmt.Errorf("reading the SSH key for %s: %w", redact(g.URI), err)
		}
		hostsFile := filepath.Join(g.AuthDir, "known_hosts")
		if _, err := os.Stat(hostsFile); err == nil {
			cb, err := knownhosts.New(hostsFile)
			if err != nil {
				return nil, fmt.Errorf("reading known_hosts: %w", err)
			}
			auth.HostKeyCallback = cb
		} else {
			// Without known_hosts in the secret there is nothing to check the host against.
			auth.HostKeyCallback = gossh.InsecureIgnoreHostKey() //nolint:gosec // documented: add known_hosts to the secret
		}
		return auth, nil
	}
	pass, ok, err := read("password")
	if err != nil || !ok {
		return nil, err
	}
	user, _, err := read("username")
	if err != nil {
		return nil, err
	}
	if user == "" {
		user = "kiln" // token-only secrets: the user name is ignored by most servers
	}
	return &githttp.BasicAuth{Username: user, Password: pass}, nil
}

// redact drops credentials from a URL for messages.
func redact(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.User != nil {
		u.User = url.User(u.User.Username())
		return u.String()
	}
	return uri
}

// Receive unpacks a tar archive (gzip-compressed or not) from r into dest, refusing entries
// that would land outside it; `.wh.` names are ordinary files here.
func Receive(ctx context.Context, r io.Reader, dest string) error {
	br := bufio.NewReader(r)
	var in io.Reader = br
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("reading the uploaded archive: %w", err)
		}
		defer zr.Close()
		in = zr
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	if err := archive.Extract(ctx, in, dest, archive.ExtractOptions{LiteralWhiteouts: true}); err != nil {
		return fmt.Errorf("unpacking the uploaded archive: %w", err)
	}
	return nil
}

// ReceiveFile writes r to dest/name: an upload of one file.
func ReceiveFile(r io.Reader, dest, name string) error {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return fmt.Errorf("the uploaded file name %q must be a plain file name", name)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dest, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("receiving %s: %w", name, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("receiving %s: %w", name, err)
	}
	return f.Close()
}

// WriteInline writes content (an inline Dockerfile) to rel inside dest, replacing what the
// source had there.
func WriteInline(dest, rel, content string) error {
	p := filepath.Join(dest, filepath.FromSlash(rel))
	if r, err := filepath.Rel(dest, p); err != nil || r == "." || strings.HasPrefix(r, "..") {
		return fmt.Errorf("the Dockerfile path %q leaves the source directory", rel)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing the inline Dockerfile: %w", err)
	}
	return nil
}
