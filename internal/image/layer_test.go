package image

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/archive"
)

// TestKeptLayerIsWrittenAgainFromItsDirectory reads a layer kept unpacked: its blob is the
// directory's tar, the same bytes each time, and a read of a directory changed since the layer
// was made fails at its end instead of handing out a blob that does not match its digest.
func TestKeptLayerIsWrittenAgainFromItsDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "motd"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var tarBuf bytes.Buffer
	if err := archive.WriteDiff(context.Background(), &tarBuf, dir, archive.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	diffID, size, err := v1.SHA256(bytes.NewReader(tarBuf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	l := &Layer{Dir: dir, Desc: v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: size, Digest: diffID}, Diff: diffID}
	for _, open := range []func() (io.ReadCloser, error){l.Compressed, l.Uncompressed} {
		rc, err := open()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, tarBuf.Bytes()) {
			t.Fatalf("reading the kept layer: %d bytes, %v; want the %d bytes of its tar", len(got), err, tarBuf.Len())
		}
	}

	if err := os.WriteFile(filepath.Join(dir, "etc", "motd"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "changed after the layer was made") {
		t.Fatalf("reading a kept layer whose directory changed: %v, want an error saying so", err)
	}
}
