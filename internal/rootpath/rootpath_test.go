package rootpath

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveStaysInRoot(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
	must(os.Symlink("/etc", filepath.Join(root, "abs")))
	must(os.Symlink("../../../../..", filepath.Join(root, "usr/up")))
	must(os.Symlink("lib", filepath.Join(root, "usr/rel")))
	must(os.Symlink("loop2", filepath.Join(root, "loop1")))
	must(os.Symlink("loop1", filepath.Join(root, "loop2")))
	for _, tc := range []struct {
		in     string
		follow bool
		want   string
	}{
		{"/usr/lib/x", true, "usr/lib/x"},
		{"../../etc/passwd", true, "etc/passwd"},
		{"/abs/passwd", true, "etc/passwd"},
		{"/abs", false, "abs"},
		{"/abs", true, "etc"},
		{"/usr/up/etc/shadow", true, "etc/shadow"},
		{"usr/rel/libc.so", true, "usr/lib/libc.so"},
		{"/missing/dir/file", true, "missing/dir/file"},
	} {
		got, err := Resolve(root, tc.in, tc.follow)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", tc.in, err)
		}
		if want := filepath.Join(root, tc.want); got != want {
			t.Errorf("Resolve(%q, %v) = %q, want %q", tc.in, tc.follow, got, want)
		}
		if !Within(root, got) {
			t.Errorf("Resolve(%q) escaped the root: %q", tc.in, got)
		}
	}
	if _, err := Resolve(root, "/loop1/x", true); err == nil {
		t.Error("a symlink loop resolved without error")
	}
}
