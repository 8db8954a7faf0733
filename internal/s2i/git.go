package s2i

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
)

// scpLike matches git's scp-like syntax, user@host:path.
var scpLike = regexp.MustCompile(`^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:`)

// gitDateLayout is git log's default date format, which s2i's commit.date label uses.
const gitDateLayout = "Mon Jan 2 15:04:05 2006 -0700"

// IsGitURL reports whether a SOURCE argument names a git repository to clone rather than a
// directory: http(s)://, git://, ssh:// and git+ssh:// URLs, and user@host:path.
func IsGitURL(s string) bool {
	for _, p := range []string{"http://", "https://", "git://", "ssh://", "git+ssh://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return scpLike.MatchString(s)
}

// SplitGitRef splits URL#REF into the repository and the branch, tag or commit.
func SplitGitRef(s string) (uri, ref string) {
	uri, ref, _ = strings.Cut(s, "#")
	return uri, ref
}

// RedactURL drops a password or token from a URL, for labels and messages.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.User(u.User.Username())
	} else if strings.Contains(u.Scheme, "http") {
		// An HTTPS user name alone is usually a token.
		u.User = nil
	}
	return u.String()
}

// NewCommit describes a commit as s2i's labels show it: the author as "Name <email>", the
// date in git log's default format, the message without surrounding space.
func NewCommit(id, ref, authorName, authorEmail string, when time.Time, message string) *Commit {
	c := &Commit{ID: id, Ref: ref, Message: strings.TrimSpace(message)}
	if authorName != "" || authorEmail != "" {
		c.Author = fmt.Sprintf("%s <%s>", authorName, authorEmail)
	}
	if !when.IsZero() {
		c.Date = when.Format(gitDateLayout)
	}
	return c
}

// LocalGitInfo describes the commit checked out in the git work tree containing dir, and the
// repository's origin URL (or "" when it has none). It returns nil, nil when dir is not in a
// git work tree.
func LocalGitInfo(dir string) (*Commit, string, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the git repository of %s: %w", dir, err)
	}
	head, err := repo.Head()
	if err != nil {
		// An empty repository has no commit to describe.
		return nil, "", nil
	}
	c, err := repo.CommitObject(head.Hash())
	if err != nil {
		return nil, "", fmt.Errorf("reading the checked-out commit of %s: %w", dir, err)
	}
	ref := ""
	if head.Name().IsBranch() {
		ref = head.Name().Short()
	}
	info := NewCommit(c.Hash.String(), ref, c.Author.Name, c.Author.Email, c.Author.When, c.Message)
	origin := ""
	if r, err := repo.Remote("origin"); err == nil && len(r.Config().URLs) > 0 {
		origin = RedactURL(r.Config().URLs[0])
	}
	return info, origin, nil
}
