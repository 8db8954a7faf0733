package s2i

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/object"
)

func TestLocalGitInfo(t *testing.T) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{"https://user:pw@example.com/app.git"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Add("a"); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2024, 3, 4, 5, 6, 7, 0, time.FixedZone("", 3600))
	hash, err := wt.Commit("Add a\n\nwith a body\n", &git.CommitOptions{Author: &object.Signature{Name: "Ann", Email: "ann@example.com", When: when}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, origin, err := LocalGitInfo(filepath.Join(dir, "sub"))
	if err != nil {
		t.Fatal(err)
	}
	want := Commit{ID: hash.String(), Ref: "master", Author: "Ann <ann@example.com>", Date: "Mon Mar 4 05:06:07 2024 +0100", Message: "Add a\n\nwith a body"}
	if c == nil || *c != want {
		t.Errorf("commit = %+v, want %+v", c, want)
	}
	if origin != "https://user@example.com/app.git" {
		t.Errorf("origin = %q, want the URL without its password", origin)
	}
}
