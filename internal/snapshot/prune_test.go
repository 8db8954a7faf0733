package snapshot

import (
	"archive/tar"
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A directory that a RUN sandbox touched only to hold a mountpoint stub (created, removed,
// times restored) must not appear in the layer, for either driver; one whose content or
// metadata really changed must.
func TestUnchangedDirectoriesStayOutOfTheLayer(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			base, a := prepareOver(t, d.new, func(lower fsT) {
				lower.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
				lower.write("var/lib/x", "x", 0o644)
			})
			root := fsT{t, a.Root()}
			var before unix.Stat_t
			root.must(unix.Lstat(root.p("etc"), &before))
			root.write("etc/hosts", "", 0o644)
			root.rm("etc/hosts")
			root.must(unix.UtimesNanoAt(unix.AT_FDCWD, root.p("etc"), []unix.Timespec{before.Atim, before.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
			root.write("var/lib/new", "n", 0o644) // a real change below an unchanged parent
			_, headers := commit(t, a, filepath.Join(base, "dest"))
			if _, ok := headers["etc/"]; ok {
				t.Errorf("etc/ is in the layer though nothing in it changed: %v", keys(headers))
			}
			for _, want := range []string{"var/", "var/lib/", "var/lib/new"} {
				if _, ok := headers[want]; !ok {
					t.Errorf("%s missing from the layer: %v", want, keys(headers))
				}
			}
		})
	}
}

func keys(m map[string]*tar.Header) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A file replaced by a directory is marked opaque by overlayfs although nothing below needs
// hiding; the layer must not carry that marker, so both drivers write the same layer.
func TestNeedlessOpaqueMarkerDropped(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			base, a := prepareOver(t, d.new, func(lower fsT) { lower.write("w/file2", "2", 0o644) })
			root := fsT{t, a.Root()}
			root.rm("w/file2")
			root.write("w/file2/inside", "x", 0o644)
			_, headers := commit(t, a, filepath.Join(base, "dest"))
			if _, ok := headers["w/file2/.wh..wh..opq"]; ok {
				t.Errorf("the layer marks w/file2 opaque though no directory is below it: %v", keys(headers))
			}
			if _, ok := headers["w/file2/inside"]; !ok {
				t.Errorf("w/file2/inside missing: %v", keys(headers))
			}
		})
	}
}

// prepareOver makes one lower directory filled by fill and prepares a snapshot over it with the
// snapshotter newS makes; it returns the test's base directory and the active snapshot.
func prepareOver(t *testing.T, newS func(string) (Snapshotter, error), fill func(fsT)) (string, Active) {
	t.Helper()
	base := t.TempDir()
	lower := fsT{t, filepath.Join(base, "lower")}
	fill(lower)
	s, err := newS(filepath.Join(base, "snaps"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Prepare(context.Background(), []string{lower.root})
	if err != nil {
		t.Fatal(err)
	}
	return base, a
}
