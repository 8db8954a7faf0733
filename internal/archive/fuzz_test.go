package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzExtract feeds arbitrary bytes to Extract and checks that, whatever it returns, nothing
// appears next to the extraction directory.
func FuzzExtract(f *testing.F) {
	f.Add(makeTar(f, reg("../x", "a", 0o644)))
	f.Add(makeTar(f, link(tar.TypeSymlink, "a", "/"), reg("a/x", "b", 0o644), link(tar.TypeLink, "h", "a/../../x")))
	f.Add(makeTar(f, dirEntry("d/", 0o755), reg("d/.wh..wh..opq", "", 0), reg("d/.wh.x", "", 0)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "root")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = Extract(context.Background(), bytes.NewReader(raw), dir, ExtractOptions{SquashOwners: true, Warnings: io.Discard})
		entries, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Fatalf("Extract wrote next to its directory: %v", entries)
		}
	})
}
