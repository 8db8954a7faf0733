package archive

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// gnuTar runs GNU tar with xattrs and numeric owners, failing the test on error.
func gnuTar(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	args = append([]string{"--numeric-owner", "--xattrs", "--xattrs-include=*"}, args...)
	cmd := exec.Command("tar", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("tar %v: %v\n%s", args, err, errOut.String())
	}
	return out.Bytes()
}

// TestGNUTarOracle checks both directions against GNU tar: a layer kiln writes, unpacked by
// GNU tar, serializes to the same bytes (whiteouts and opaque markers come back as the plain
// files GNU tar makes of them, which kiln writes identically); and a tree GNU tar archives in
// PAX format, unpacked by kiln, serializes like the tree itself.
func TestGNUTarOracle(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("GNU tar not installed: apt-get install tar")
	}
	src := t.TempDir()
	buildTree(t, src)
	layer := writeDiff(t, src, WriteOptions{})

	byGNU := t.TempDir()
	gnuTar(t, layer, "-xpf", "-", "-C", byGNU)
	if again := writeDiff(t, byGNU, WriteOptions{}); !bytes.Equal(layer, again) {
		t.Errorf("GNU tar's unpacking of kiln's layer serializes differently:\n%s\n---\n%s", listing(t, layer), listing(t, again))
	}

	// A tree without overlay metadata: GNU tar would archive whiteouts as devices and the
	// opaque xattr as a PAX record, which Extract refuses to apply.
	plain := t.TempDir()
	buildTree(t, plain)
	for _, wh := range []string{"deleted", "usr/gone"} {
		if err := os.Remove(filepath.Join(plain, wh)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Removexattr(filepath.Join(plain, "opaque"), OpaqueXattr); err != nil {
		t.Fatal(err)
	}
	// Removing entries changed the parents' mtimes; write the reference after that.
	want := writeDiff(t, plain, WriteOptions{})
	archived := gnuTar(t, nil, "--format=pax", "-cf", "-", "-C", plain, ".")
	byKiln := t.TempDir()
	if err := Extract(context.Background(), bytes.NewReader(archived), byKiln, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := writeDiff(t, byKiln, WriteOptions{}); !bytes.Equal(want, got) {
		t.Errorf("kiln's unpacking of GNU tar's archive differs from the tree:\n%s\n---\n%s", listing(t, want), listing(t, got))
	}
}
