package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/archive"
)

// singleIDMapped reports whether this process runs in a user namespace
// that maps one id only, where files cannot be given other owners.
func singleIDMapped(t *testing.T) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	f := strings.Fields(lines[0])
	return len(lines) == 1 && len(f) == 3 && f[2] == "1"
}

// checkRichLayer checks the overlay-format directory of richTar(tag).
func checkRichLayer(t *testing.T, dir, tag string) {
	t.Helper()
	owner := uint32(1000)
	if singleIDMapped(t) {
		owner = 0 // SquashOwners
	}
	stat := func(rel string) *syscall.Stat_t {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(dir, rel), &st); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		return &st
	}
	if st := stat("."); st.Mode&0o7777 != 0o755 {
		t.Errorf("layer root mode %o, want 755", st.Mode&0o7777)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc/hello")); err != nil || string(b) != "hello "+tag {
		t.Errorf("etc/hello: %q, %v", b, err)
	}
	if st := stat("etc/hello"); st.Uid != owner || st.Mode&0o7777 != 0o644 || st.Nlink != 2 {
		t.Errorf("etc/hello: uid %d mode %o nlink %d", st.Uid, st.Mode&0o7777, st.Nlink)
	}
	if stat("etc/hello.link").Ino != stat("etc/hello").Ino {
		t.Error("etc/hello.link is not a hard link to etc/hello")
	}
	if st := stat("etc/gone"); st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/gone is not a whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "/bin/busybox" {
		t.Errorf("bin/sh: %q, %v", target, err)
	}
	if st := stat("bin/su"); st.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/su mode %o, want 4755", st.Mode&0o7777)
	}
	if st := stat("opt"); st.Mode&0o7777 != 0o750 || st.Uid != owner {
		t.Errorf("opt: mode %o uid %d", st.Mode&0o7777, st.Uid)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "opt"), archive.OpaqueXattr, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opt is not opaque: %q, %v", buf[:n], err)
	}
}

func richImage(t *testing.T) (v1.Image, []*testLayer) {
	layers := []*testLayer{
		newLayer(t, richTar(t, "gzip"), "gzip"),
		newLayer(t, richTar(t, "zstd"), "zstd"),
		newLayer(t, richTar(t, "none"), "none"),
	}
	return imageOf(t, layers[0], layers[1], layers[2]), layers
}

var extractOpts = archive.ExtractOptions{SquashOwners: true}

func TestUnpack(t *testing.T) {
	s := openStore(t)
	img, layers := richImage(t)
	dirs, err := s.Unpack(context.Background(), img, extractOpts)
	if err != nil {
		t.Fatal(err)
	}
	for i, tag := range []string{"gzip", "zstd", "none"} {
		if dir, ok := s.LayerDir(layers[i].diffID); !ok || dir != dirs[i] {
			t.Fatalf("layer %d: Unpack gave %s, LayerDir %s %v", i, dirs[i], dir, ok)
		}
		checkRichLayer(t, dirs[i], tag)
		if b, err := os.ReadFile(s.BlobPath(layers[i].digest)); err != nil || !bytes.Equal(b, layers[i].compressed) {
			t.Errorf("layer %d: blob not stored as fetched: %v", i, err)
		}
	}
	again, err := s.Unpack(context.Background(), img, extractOpts)
	if err != nil || strings.Join(again, " ") != strings.Join(dirs, " ") {
		t.Fatalf("second Unpack: %v, %v", again, err)
	}
	for i, l := range layers {
		if n := l.reads.Load(); n != 1 {
			t.Errorf("layer %d fetched %d times, want once", i, n)
		}
	}
	if names := dirNames(t, s.session); len(names) != 0 {
		t.Errorf("temporary files left behind: %v", names)
	}
}

func TestConcurrentUnpackExtractsOnce(t *testing.T) {
	s := openStore(t)
	other, err := Open(s.Root()) // a second build on the same store
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	img, layers := richImage(t)
	var wg sync.WaitGroup
	results := make([][]string, 2)
	errs := make([]error, 2)
	for i, st := range []*Store{s, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = st.Unpack(context.Background(), img, extractOpts)
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	if strings.Join(results[0], " ") != strings.Join(results[1], " ") {
		t.Fatalf("two Unpacks disagree: %v vs %v", results[0], results[1])
	}
	for i, l := range layers {
		if n := l.reads.Load(); n != 1 {
			t.Errorf("layer %d fetched %d times by two concurrent Unpacks, want once", i, n)
		}
	}
}

func TestUnpackRejectsMismatch(t *testing.T) {
	raw := richTar(t, "bad")
	lie := func(mod func(*testLayer)) *testLayer {
		l := newLayer(t, raw, "gzip")
		mod(l)
		return l
	}
	truncated := newLayer(t, raw, "gzip")
	truncated.compressed = truncated.compressed[:len(truncated.compressed)/2]
	truncated.digest = sha(truncated.compressed)
	tests := []struct {
		name  string
		layer *testLayer
		want  string
	}{
		{"digest", lie(func(l *testLayer) { l.digest = sha([]byte("other")) }), "digest mismatch"},
		{"diffID", lie(func(l *testLayer) { l.diffID = sha([]byte("other")) }), "diffID mismatch"},
		{"truncated", truncated, "unpacking layer " + truncated.digest.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.Unpack(context.Background(), imageOf(t, tt.layer), extractOpts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			for _, sub := range []string{"layers", "blobs/sha256"} {
				if names := dirNames(t, filepath.Join(s.Root(), sub)); len(names) != 0 {
					t.Errorf("a rejected layer left %s: %v", sub, names)
				}
			}
			if names := dirNames(t, s.session); len(names) != 0 {
				t.Errorf("temporary files left behind: %v", names)
			}
		})
	}
}

func TestUnpackFromStoredBlobs(t *testing.T) {
	s := openStore(t)
	img, layers := richImage(t)
	if err := s.SaveImage(context.Background(), img, "app"); err != nil {
		t.Fatal(err)
	}
	local, err := s.Image("localhost/app:latest")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := s.Unpack(context.Background(), local, extractOpts)
	if err != nil {
		t.Fatal(err)
	}
	checkRichLayer(t, dirs[1], "zstd")
	for i, l := range layers {
		if n := l.reads.Load(); n != 1 {
			t.Errorf("layer %d read %d times from its source, want once (by SaveImage)", i, n)
		}
	}
}

func TestAddLayerDir(t *testing.T) {
	s := openStore(t)
	diffID := sha([]byte("a layer"))
	first, _ := s.TempDir("snap-")
	os.WriteFile(filepath.Join(first, "f"), []byte("first"), 0o644)
	got, err := s.AddLayerDir(first, diffID)
	if err != nil {
		t.Fatal(err)
	}
	if dir, ok := s.LayerDir(diffID); !ok || dir != got {
		t.Fatalf("LayerDir = %s %v, AddLayerDir gave %s", dir, ok, got)
	}
	second, _ := s.TempDir("snap-")
	os.WriteFile(filepath.Join(second, "f"), []byte("second"), 0o644)
	if again, err := s.AddLayerDir(second, diffID); err != nil || again != got {
		t.Fatalf("adding a duplicate: %s, %v", again, err)
	}
	if b, _ := os.ReadFile(filepath.Join(got, "f")); string(b) != "first" {
		t.Errorf("the stored layer was replaced: %q", b)
	}
	if _, err := os.Stat(second); !os.IsNotExist(err) {
		t.Errorf("the duplicate was not removed: %v", err)
	}
	// A layer known only as a directory gets its blob on Unpack.
	l := newLayer(t, richTar(t, "x"), "gzip")
	dir, _ := s.TempDir("snap-")
	if _, err := s.AddLayerDir(dir, l.diffID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unpack(context.Background(), imageOf(t, l), extractOpts); err != nil {
		t.Fatal(err)
	}
	if !s.HasBlob(l.digest) {
		t.Error("Unpack did not store the blob of an already unpacked layer")
	}
	if _, err := s.AddLayerDir(dir, v1.Hash{Algorithm: "sha256", Hex: "../x"}); err == nil {
		t.Error("a malformed diffID was accepted")
	}
}
