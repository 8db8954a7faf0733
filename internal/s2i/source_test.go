package s2i

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// writeTree makes files under root: "path" is a file holding its own name, "path/" a
// directory, "path->target" a symlink.
func writeTree(t *testing.T, root string, entries ...string) {
	t.Helper()
	for _, e := range entries {
		if name, target, ok := strings.Cut(e, "->"); ok {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p := filepath.Join(root, e)
		if strings.HasSuffix(e, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// listTree returns the relative paths under root, sorted.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			out = append(out, relSlash(root, p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestCopySourceHonoursS2iignoreAndExclude(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "src")
	writeTree(t, src,
		"app.txt", "secret.txt", "debug.log", "logs/keep.log", "logs/other.log",
		"tmp/a", "tmp/b", "docs/readme", "docs/keep.md",
		".git/config", "vendor/lib/.git", "vendor/lib/code.go", "link->app.txt",
		".s2iignore",
	)
	ignore := "# comment\n\nsecret.txt\n*.log\n/tmp\ndocs/*\n!docs/keep.md\n"
	if err := os.WriteFile(filepath.Join(src, ".s2iignore"), []byte(ignore), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "app.txt"), 0o755); err != nil {
		t.Fatal(err)
	}
	excluded, skipped, err := copySource(src, dst, regexp.MustCompile(DefaultExclude))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		".s2iignore", "app.txt", "docs", "docs/keep.md", "link", "logs", "logs/keep.log", "logs/other.log",
		"vendor", "vendor/lib", "vendor/lib/code.go",
	}
	if got := listTree(t, dst); !reflect.DeepEqual(got, want) {
		t.Errorf("copied:\n got %v\nwant %v", got, want)
	}
	sort.Strings(excluded)
	wantExcluded := []string{".git", "debug.log", "docs/readme", "secret.txt", "tmp", "vendor/lib/.git"}
	if !reflect.DeepEqual(excluded, wantExcluded) {
		t.Errorf("excluded:\n got %v\nwant %v", excluded, wantExcluded)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped = %v", skipped)
	}
	fi, err := os.Stat(filepath.Join(dst, "app.txt"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("app.txt mode = %v, %v; want 0755 kept", fi.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "app.txt" {
		t.Errorf("link -> %q, %v; want the symlink kept", target, err)
	}
}

func TestCopySourceWithoutRules(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "src")
	writeTree(t, src, "a", ".git/HEAD", "d/")
	excluded, _, err := copySource(src, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := listTree(t, dst); !reflect.DeepEqual(got, []string{".git", ".git/HEAD", "a", "d"}) {
		t.Errorf("copied %v: with no --exclude nothing is left out", got)
	}
	if len(excluded) != 0 {
		t.Errorf("excluded = %v", excluded)
	}
}

func TestParseIgnoreRejectsBadPatterns(t *testing.T) {
	if _, err := parseIgnore(strings.NewReader("ok\n[bad\n")); err == nil || !strings.Contains(err.Error(), ".s2iignore:2") {
		t.Errorf("err = %v, want one naming .s2iignore:2", err)
	}
}
