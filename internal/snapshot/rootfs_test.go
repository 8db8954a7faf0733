package snapshot

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-build/kiln/internal/archive"
)

// TestRealRootfsDrivers makes the same changes to a real Debian rootfs with both snapshotters
// and checks they commit byte-identical layers once SOURCE_DATE_EPOCH clamps the mtimes the
// two cannot share (the moment each change happened). An unchanged snapshot must commit an
// empty layer: the copy snapshotter's comparison finds no false differences in 8000 files.
func TestRealRootfsDrivers(t *testing.T) {
	if testing.Short() {
		t.Skip("copies a 170 MB rootfs; skipped with -short")
	}
	src := os.Getenv("KILN_TEST_ROOTFS_TAR")
	if src == "" {
		matches, _ := filepath.Glob("/var/cache/kiln-test/debian-bookworm-*.tar")
		if len(matches) == 0 {
			t.Skip("no Debian rootfs tar: make one with mmdebstrap (see internal/archive/rootfs_test.go) or set KILN_TEST_ROOTFS_TAR")
		}
		src = matches[len(matches)-1]
	}
	ctx := context.Background()
	store := t.TempDir()
	base := filepath.Join(store, "layers", "debian")
	must(t, os.MkdirAll(base, 0o755))
	f, err := os.Open(src)
	must(t, err)
	defer f.Close()
	must(t, archive.Extract(ctx, f, base, archive.ExtractOptions{SquashOwners: true, Warnings: io.Discard}))

	epoch := time.Unix(1, 0)
	layers := map[string][]byte{}
	for _, d := range drivers() {
		s, err := d.new(filepath.Join(store, "snapshots-"+d.name))
		must(t, err)
		a, err := s.Prepare(ctx, []string{base})
		must(t, err)
		raw, hdrs := commit(t, a, filepath.Join(store, "layers", d.name+"-unchanged"))
		if len(hdrs) != 0 {
			t.Errorf("%s: unchanged rootfs committed %d entries: %v", d.name, len(hdrs), sortedNames(hdrs))
		}
		_ = raw

		a, err = s.Prepare(ctx, []string{base})
		must(t, err)
		fs := fsT{t, a.Root()}
		fs.write("etc/hostname", "kiln\n", 0o644)
		fs.rm("usr/share/doc")
		must(t, os.Chmod(fs.p("usr/bin/env"), 0o700))
		fs.write("opt/app/run.sh", "#!/bin/sh\n", 0o755)
		fs.symlink("/opt/app/run.sh", "usr/local/bin/app")
		fs.rm("etc/apt")
		fs.mkdir("etc/apt")
		fs.write("etc/apt/sources.list", "deb http://deb.debian.org/debian bookworm main\n", 0o644)
		var buf bytes.Buffer
		must(t, commitLayer(ctx, a, &buf, filepath.Join(store, "layers", d.name), archive.WriteOptions{SourceDateEpoch: &epoch}))
		layers[d.name] = buf.Bytes()
	}
	ov, cp := layers["overlay"], layers["copy"]
	if bytes.Equal(ov, cp) {
		t.Logf("overlay and copy layers identical (%d bytes)", len(ov))
		return
	}
	t.Logf("overlay layer %d bytes, copy layer %d bytes: comparing their effect", len(ov), len(cp))
	// The two express "rm -rf etc/apt && mkdir etc/apt" differently (opaque dir versus one
	// whiteout per deleted child); compare what each layer does instead of its bytes.
	for _, name := range []string{"overlay", "copy"} {
		a, err := NewOverlay(filepath.Join(store, "check-"+name), Options{})
		must(t, err)
		view, err := a.Prepare(ctx, []string{base, filepath.Join(store, "layers", name)})
		must(t, err)
		defer view.Release()
		layers[name+"-view"] = writeTree(t, view.Root(), epoch)
	}
	if !bytes.Equal(layers["overlay-view"], layers["copy-view"]) {
		t.Fatal("overlay and copy snapshotters committed layers that give different rootfs")
	}
}

func writeTree(t *testing.T, dir string, epoch time.Time) []byte {
	var buf bytes.Buffer
	must(t, archive.WriteDiff(context.Background(), &buf, dir, archive.WriteOptions{SourceDateEpoch: &epoch}))
	return buf.Bytes()
}
