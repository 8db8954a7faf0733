package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/archive"
)

// drivers are the snapshotters every conformance test runs against.
func drivers() []struct {
	name string
	new  func(root string) (Snapshotter, error)
} {
	return []struct {
		name string
		new  func(root string) (Snapshotter, error)
	}{
		{"overlay", func(root string) (Snapshotter, error) { return NewOverlay(root, Options{}) }},
		{"overlay-durable", func(root string) (Snapshotter, error) { return NewOverlay(root, Options{Durable: true}) }},
		{"copy", NewCopy},
	}
}

// fsT wraps the file operations tests make, failing the test on error.
type fsT struct {
	t    *testing.T
	root string
}

func (f fsT) p(rel string) string { return filepath.Join(f.root, rel) }

func (f fsT) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f fsT) write(rel, content string, mode os.FileMode) {
	f.t.Helper()
	f.must(os.MkdirAll(filepath.Dir(f.p(rel)), 0o755))
	f.must(os.WriteFile(f.p(rel), []byte(content), mode))
	f.must(os.Chmod(f.p(rel), mode))
}

func (f fsT) mkdir(rel string) { f.t.Helper(); f.must(os.MkdirAll(f.p(rel), 0o755)) }
func (f fsT) rm(rel string)    { f.t.Helper(); f.must(os.RemoveAll(f.p(rel))) }
func (f fsT) symlink(target, rel string) {
	f.t.Helper()
	f.must(os.Symlink(target, f.p(rel)))
}

func (f fsT) lstat(rel string) *unix.Stat_t {
	f.t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(f.p(rel), &st); err != nil {
		f.t.Fatalf("%s: %v", rel, err)
	}
	return &st
}

func (f fsT) content(rel, want string) {
	f.t.Helper()
	b, err := os.ReadFile(f.p(rel))
	if err != nil || string(b) != want {
		f.t.Errorf("%s = %q, %v; want %q", rel, b, err, want)
	}
}

func (f fsT) absent(rel string) {
	f.t.Helper()
	if _, err := os.Lstat(f.p(rel)); !errors.Is(err, os.ErrNotExist) {
		f.t.Errorf("%s exists (err %v), want it absent", rel, err)
	}
}

func (f fsT) mode(rel string, want uint32) {
	f.t.Helper()
	if got := f.lstat(rel).Mode; got != want {
		f.t.Errorf("%s: mode %#o, want %#o", rel, got, want)
	}
}

func (f fsT) names(rel string, want ...string) {
	f.t.Helper()
	entries, err := os.ReadDir(f.p(rel))
	f.must(err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		f.t.Errorf("%s holds %v, want %v", rel, got, want)
	}
}

func (f fsT) link(rel, want string) {
	f.t.Helper()
	got, err := os.Readlink(f.p(rel))
	if err != nil || got != want {
		f.t.Errorf("%s -> %q, %v; want %q", rel, got, err, want)
	}
}

// canChown reports whether files can be given owners other than 0 here (false in a user
// namespace with a single id mapped).
func canChown(t *testing.T) bool {
	p := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return os.Lchown(p, 1000, 1000) == nil
}

// commit commits a and returns the layer and its tar headers by name.
func commit(t *testing.T, a Active, dest string) ([]byte, map[string]*tar.Header) {
	t.Helper()
	var buf bytes.Buffer
	if err := commitLayer(context.Background(), a, &buf, dest, archive.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(); err != nil {
		t.Fatalf("Release after Seal: %v", err)
	}
	hdrs := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading committed layer: %v", err)
		}
		hdrs[h.Name] = h
	}
	return buf.Bytes(), hdrs
}

// TestSealedDiffIsALowerWhileWritten seals a snapshot, builds on its diff at once and writes the
// diff as a layer while the next snapshot changes what it sees: what the solver does to write
// a step's layer while later steps run. The layer must come out the same as after the next
// snapshot is gone, and the next snapshot's changes must not reach the sealed diff.
func TestSealedDiffIsALowerWhileWritten(t *testing.T) {
	ctx := context.Background()
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			store := t.TempDir()
			s, err := d.new(filepath.Join(store, "snapshots"))
			must(t, err)
			a, err := s.Prepare(ctx, nil)
			must(t, err)
			f := fsT{t, a.Root()}
			for i := range 200 {
				f.write(fmt.Sprintf("d%d/f%d", i%7, i), strings.Repeat("x", i*37), 0o644)
			}
			sealed := filepath.Join(store, "sealed")
			must(t, a.Seal(ctx, sealed))

			next, err := s.Prepare(ctx, []string{sealed})
			must(t, err)
			defer next.Release()
			var during bytes.Buffer
			written := make(chan error, 1)
			go func() { written <- archive.WriteDiff(ctx, &during, sealed, archive.WriteOptions{}) }()
			g := fsT{t, next.Root()}
			for i := range 200 {
				switch i % 3 {
				case 0:
					g.write(fmt.Sprintf("d%d/f%d", i%7, i), "changed", 0o600)
				case 1:
					g.rm(fmt.Sprintf("d%d/f%d", i%7, i))
				}
			}
			g.rm("d3")
			must(t, <-written)
			must(t, next.Release())

			var after bytes.Buffer
			must(t, archive.WriteDiff(ctx, &after, sealed, archive.WriteOptions{}))
			if !bytes.Equal(during.Bytes(), after.Bytes()) {
				t.Fatalf("the layer written while the diff was a lower (%d bytes) differs from the one written after (%d bytes)", during.Len(), after.Len())
			}
			hdrs := map[string]bool{}
			tr := tar.NewReader(&after)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				must(t, err)
				hdrs[h.Name] = true
			}
			if len(hdrs) != 200+7 {
				t.Errorf("the layer has %d entries, want 207 (200 files in 7 directories)", len(hdrs))
			}
			sf := fsT{t, sealed}
			sf.content("d0/f0", "")
			sf.content("d3/f3", strings.Repeat("x", 3*37))
		})
	}
}

// commitLayer seals a to dest and writes dest to w as a layer, as the solver does (there, the
// write runs while later steps use dest). dest is removed when the layer cannot be written.
func commitLayer(ctx context.Context, a Active, w io.Writer, dest string, opts archive.WriteOptions) error {
	if err := a.Seal(ctx, dest); err != nil {
		return err
	}
	if err := archive.WriteDiff(ctx, w, dest, opts); err != nil {
		os.RemoveAll(dest)
		return fmt.Errorf("committing snapshot to %s: %w", dest, err)
	}
	return nil
}
