package snapshot

import (
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

// TestDeepStack stacks 130 layers, each adding a file and deleting the previous layer's,
// with lower paths long enough that mount(2)'s one page could not name them all.
func TestDeepStack(t *testing.T) {
	const depth = 130
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			store := t.TempDir()
			s, err := d.new(filepath.Join(store, "snapshots"))
			must(t, err)
			// Commas and colons split mount(2)'s overlay options; lowerdir+ takes them as is.
			layers := filepath.Join(store, "layers-with-a-rather-long-name,and:separators")
			must(t, os.Mkdir(layers, 0o755))
			var lowers []string
			for i := range depth {
				a, err := s.Prepare(ctx, lowers)
				must(t, err)
				f := fsT{t, a.Root()}
				f.write(fmt.Sprintf("files/f%03d", i), fmt.Sprint(i), 0o644)
				if i > 0 {
					f.rm(fmt.Sprintf("files/f%03d", i-1))
				}
				f.write("counter", fmt.Sprint(i), 0o644)
				dest := filepath.Join(layers, fmt.Sprintf("sha256-%064d", i))
				commit(t, a, dest)
				lowers = append(lowers, dest)
			}
			if n := len(strings.Join(lowers, ":")); n <= os.Getpagesize() {
				t.Fatalf("lower paths total %d bytes: too short to prove the one-page limit is lifted", n)
			}
			a, err := s.Prepare(ctx, lowers)
			must(t, err)
			defer a.Release()
			f := fsT{t, a.Root()}
			f.names("files", fmt.Sprintf("f%03d", depth-1))
			f.content("counter", fmt.Sprint(depth-1))
		})
	}
}

func TestEmptyAndLifecycle(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			store := t.TempDir()
			s, err := d.new(filepath.Join(store, "snapshots"))
			must(t, err)
			a, err := s.Prepare(ctx, nil)
			must(t, err)
			fsT{t, a.Root()}.names("")
			// An unchanged snapshot commits to an empty layer and an empty dest.
			raw, hdrs := commit(t, a, filepath.Join(store, "empty"))
			if len(hdrs) != 0 || len(raw) == 0 {
				t.Errorf("empty commit gave %d entries in %d bytes", len(hdrs), len(raw))
			}
			fsT{t, filepath.Join(store, "empty")}.names("")

			a, err = s.Prepare(ctx, []string{filepath.Join(store, "empty")})
			must(t, err)
			err = commitLayer(ctx, a, io.Discard, filepath.Join(store, "empty"), archive.WriteOptions{})
			if err == nil || !strings.Contains(err.Error(), "exists") {
				t.Errorf("commit onto an existing dest: %v", err)
			}
			must(t, a.Release())
			must(t, a.Release())
			entries, err := os.ReadDir(filepath.Join(store, "snapshots"))
			must(t, err)
			if len(entries) != 0 {
				t.Errorf("released snapshots left %v behind", entries)
			}
		})
	}
}

// TestOverlayUnsupported puts the snapshot root on overlayfs, where an upper dir cannot live:
// NewOverlay must say ErrUnsupported and New must fall back to copying.
func TestOverlayUnsupported(t *testing.T) {
	ctx := context.Background()
	s, err := NewOverlay(filepath.Join(t.TempDir(), "snapshots"), Options{})
	must(t, err)
	outer, err := s.Prepare(ctx, nil)
	must(t, err)
	defer outer.Release()
	nested := filepath.Join(outer.Root(), "store", "snapshots")
	_, err = NewOverlay(nested, Options{})
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NewOverlay on overlayfs: %v, want ErrUnsupported", err)
	}
	auto, err := New(nested, DriverAuto, Options{})
	must(t, err)
	if _, ok := auto.(*copySnapshotter); !ok {
		t.Errorf("New(auto) on overlayfs gave %T, want the copy snapshotter", auto)
	}
	a, err := auto.Prepare(ctx, nil)
	must(t, err)
	fsT{t, a.Root()}.write("x", "y", 0o644)
	var buf bytes.Buffer
	must(t, commitLayer(ctx, a, &buf, filepath.Join(outer.Root(), "store", "layer"), archive.WriteOptions{}))
	if _, err := New(nested, "zfs", Options{}); err == nil {
		t.Error("unknown driver accepted")
	}
	good, err := New(filepath.Join(t.TempDir(), "snapshots"), DriverAuto, Options{})
	must(t, err)
	if _, ok := good.(*overlay); !ok {
		t.Errorf("New(auto) where overlay works gave %T", good)
	}
}

// TestLegacyMount exercises the mount(2) path kept for kernels before 6.8, with the
// separators its option syntax needs escaped, and its one-page limit.
func TestLegacyMount(t *testing.T) {
	dir := t.TempDir()
	var lowers []string
	for _, name := range []string{"bottom,with:odd", `top\slash`} {
		l := filepath.Join(dir, name)
		must(t, os.MkdirAll(l, 0o755))
		must(t, os.WriteFile(filepath.Join(l, "f"), []byte(name), 0o644))
		lowers = append(lowers, l)
	}
	for _, sub := range []string{"upper", "work", "merged"} {
		must(t, os.Mkdir(filepath.Join(dir, sub), 0o755))
	}
	merged := filepath.Join(dir, "merged")
	must(t, legacyMountOverlay(lowers, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), merged, mountFlags{volatile: true}))
	defer unix.Unmount(merged, 0)
	fsT{t, merged}.content("f", `top\slash`)

	many := make([]string, 200)
	for i := range many {
		many[i] = filepath.Join(dir, fmt.Sprintf("layer-%03d-%s", i, strings.Repeat("x", 20)))
	}
	err := legacyMountOverlay(many, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), merged, mountFlags{})
	if err == nil || !strings.Contains(err.Error(), "exceed a page") {
		t.Errorf("200 long lowers through mount(2): %v, want the one-page error", err)
	}
}

// TestCommitWhileBusy commits while a file in the snapshot is still open, as when a RUN
// step leaves a process behind: the commit must still succeed and capture the change.
func TestCommitWhileBusy(t *testing.T) {
	for _, d := range drivers() {
		t.Run(d.name, func(t *testing.T) {
			store := t.TempDir()
			s, err := d.new(filepath.Join(store, "snapshots"))
			must(t, err)
			a, err := s.Prepare(context.Background(), nil)
			must(t, err)
			fsT{t, a.Root()}.write("held", "open", 0o644)
			f, err := os.Open(filepath.Join(a.Root(), "held"))
			must(t, err)
			defer f.Close()
			_, hdrs := commit(t, a, filepath.Join(store, "layer"))
			if hdrs["held"] == nil {
				t.Errorf("layer lacks the file held open: %v", sortedNames(hdrs))
			}
		})
	}
}
