package source

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// gitRepo makes a real repository with git(1): a main branch with two commits, a tag on the
// first, and a branch "dev".
func gitRepo(t *testing.T) (dir, first string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is missing; remedy: apt-get install -y git")
	}
	dir = t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@e", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@e")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	run("add", ".")
	run("commit", "-q", "-m", "one")
	first = run("rev-parse", "HEAD")
	run("tag", "v1")
	os.WriteFile(filepath.Join(dir, "second"), []byte("2"), 0o644)
	run("add", ".")
	run("commit", "-q", "-m", "two")
	run("branch", "dev", first)
	return dir, first
}

func TestClone(t *testing.T) {
	repo, first := gitRepo(t)
	for _, tt := range []struct {
		ref        string
		wantSecond bool
	}{{"", true}, {"main", true}, {"dev", false}, {"v1", false}, {first, false}} {
		dest := filepath.Join(t.TempDir(), "src")
		commit, err := Clone(context.Background(), Git{URI: "file://" + repo, Ref: tt.ref}, dest, nil)
		if err != nil {
			t.Fatalf("ref %q: %v", tt.ref, err)
		}
		_, err = os.Stat(filepath.Join(dest, "second"))
		if (err == nil) != tt.wantSecond {
			t.Errorf("ref %q: second file present %v", tt.ref, err == nil)
		}
		if _, err := os.Stat(filepath.Join(dest, ".git")); err == nil {
			t.Errorf("ref %q: .git left in the context", tt.ref)
		}
		if tt.ref == "main" && (commit.Message != "two" || commit.AuthorName == "" || commit.When.IsZero()) {
			t.Errorf("ref main: commit %+v, want the message, author and date of the second commit", commit)
		}
		if tt.ref == first && commit.ID != first {
			t.Errorf("checked out %s, want %s", commit, first)
		}
	}
	if _, err := Clone(context.Background(), Git{URI: "file://" + repo, Ref: "nope"}, filepath.Join(t.TempDir(), "x"), nil); err == nil ||
		!strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown ref: %v", err)
	}
}

func TestReceive(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{"Dockerfile": "FROM scratch\n", "dir/.wh.kept": "x"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	dest := t.TempDir()
	if err := Receive(context.Background(), &buf, dest); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "dir", ".wh.kept")); err != nil {
		t.Errorf("a .wh. file of the upload was not kept: %v", err)
	}
	var evil bytes.Buffer
	tw = tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Typeflag: tar.TypeReg})
	tw.Close()
	if err := Receive(context.Background(), &evil, t.TempDir()); err == nil {
		t.Error("an entry outside the destination was accepted")
	}
	if err := WriteInline(dest, "../x", "FROM scratch"); err == nil {
		t.Error("an inline Dockerfile path outside the source was accepted")
	}
	if err := ReceiveFile(strings.NewReader("jar"), dest, "app.jar"); err != nil {
		t.Fatal(err)
	}
}

// TestCloneOverHTTPWithToken clones from git's own smart-HTTP server (git http-backend behind
// net/http/cgi) that requires basic auth, with the credentials a Kubernetes Secret mounts.
func TestCloneOverHTTPWithToken(t *testing.T) {
	repo, _ := gitRepo(t)
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git http-backend is missing; remedy: apt-get install -y git")
	}
	root := filepath.Dir(repo)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != "t0ken" {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	uri := srv.URL + "/" + filepath.Base(repo)

	if _, err := Clone(context.Background(), Git{URI: uri, Ref: "main"}, filepath.Join(t.TempDir(), "x"), nil); err == nil {
		t.Fatal("cloned without credentials")
	}
	auth := t.TempDir()
	os.WriteFile(filepath.Join(auth, "username"), []byte("ci\n"), 0o600)
	os.WriteFile(filepath.Join(auth, "password"), []byte("t0ken\n"), 0o600)
	dest := filepath.Join(t.TempDir(), "src")
	if _, err := Clone(context.Background(), Git{URI: uri, Ref: "main", AuthDir: auth}, dest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "second")); err != nil {
		t.Fatalf("the clone lacks the branch's files: %v", err)
	}
}

// TestCloneOverSSHWithKey clones through an SSH server (x/crypto/ssh running git-upload-pack)
// that accepts only the Secret's key, and checks its host key against the Secret's
// known_hosts.
func TestCloneOverSSHWithKey(t *testing.T) {
	repo, _ := gitRepo(t)
	_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
	clientPub, clientKey, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := gossh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	allowed, _ := gossh.NewPublicKey(clientPub)
	cfg := &gossh.ServerConfig{PublicKeyCallback: func(_ gossh.ConnMetadata, k gossh.PublicKey) (*gossh.Permissions, error) {
		if bytes.Equal(k.Marshal(), allowed.Marshal()) {
			return nil, nil
		}
		return nil, fmt.Errorf("unknown key")
	}}
	cfg.AddHostKey(hostSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go serveGitSSH(l, cfg)

	auth := t.TempDir()
	block, err := gossh.MarshalPrivateKey(clientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(auth, "ssh-privatekey"), pem.EncodeToMemory(block), 0o600)
	uri := "ssh://git@" + l.Addr().String() + repo
	_, port, _ := net.SplitHostPort(l.Addr().String())
	line := knownhosts.Line([]string{"[127.0.0.1]:" + port}, hostSigner.PublicKey())
	os.WriteFile(filepath.Join(auth, "known_hosts"), []byte(line+"\n"), 0o600)
	dest := filepath.Join(t.TempDir(), "src")
	if _, err := Clone(context.Background(), Git{URI: uri, Ref: "dev", AuthDir: auth}, dest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "Dockerfile")); err != nil {
		t.Fatal(err)
	}
	// A host key that is not the one known_hosts names is refused.
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := gossh.NewSignerFromKey(otherKey)
	os.WriteFile(filepath.Join(auth, "known_hosts"), []byte(knownhosts.Line([]string{"[127.0.0.1]:" + port}, otherSigner.PublicKey())+"\n"), 0o600)
	if _, err := Clone(context.Background(), Git{URI: uri, Ref: "dev", AuthDir: auth}, filepath.Join(t.TempDir(), "x"), nil); err == nil {
		t.Fatal("cloned from a host whose key known_hosts does not name")
	}
}

// serveGitSSH answers `git-upload-pack PATH` over SSH sessions.
func serveGitSSH(l net.Listener, cfg *gossh.ServerConfig) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			_, chans, reqs, err := gossh.NewServerConn(c, cfg)
			if err != nil {
				return
			}
			go gossh.DiscardRequests(reqs)
			for nc := range chans {
				ch, requests, err := nc.Accept()
				if err != nil {
					continue
				}
				go func() {
					defer ch.Close()
					for req := range requests {
						if req.Type != "exec" {
							req.Reply(false, nil)
							continue
						}
						req.Reply(true, nil)
						var payload struct{ Command string }
						gossh.Unmarshal(req.Payload, &payload)
						args := strings.Fields(payload.Command)
						path := strings.Trim(args[len(args)-1], "'")
						cmd := exec.Command("git-upload-pack", path)
						cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
						status := uint32(0)
						if err := cmd.Run(); err != nil {
							status = 1
						}
						ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{status}))
						return
					}
				}()
			}
		}()
	}
}
