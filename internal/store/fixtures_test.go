package store

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// testLayer is a layer held in memory whose digest and diffID are whatever
// the test says (so tests can lie), counting how often it is read.
type testLayer struct {
	compressed, uncompressed []byte
	digest, diffID           v1.Hash
	mediaType                types.MediaType
	reads                    *atomic.Int32
}

func (l *testLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *testLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *testLayer) Size() (int64, error)     { return int64(len(l.compressed)), nil }
func (l *testLayer) MediaType() (types.MediaType, error) {
	return l.mediaType, nil
}
func (l *testLayer) Compressed() (io.ReadCloser, error) {
	l.reads.Add(1)
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l *testLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// entry is one tar entry of a test layer.
type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	body     string // file content or link target
}

// layerTar writes entries as an uncompressed layer tar.
func layerTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeReg:
			hdr.Size = int64(len(e.body))
		case tar.TypeSymlink, tar.TypeLink:
			hdr.Linkname = e.body
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			io.WriteString(tw, e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newLayer compresses raw ("gzip", "zstd" or "none") into a testLayer with
// honest digest and diffID.
func newLayer(t *testing.T, raw []byte, compression string) *testLayer {
	t.Helper()
	var buf bytes.Buffer
	mt := types.OCILayer
	switch compression {
	case "gzip":
		zw := gzip.NewWriter(&buf)
		zw.Write(raw)
		zw.Close()
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(raw)
		zw.Close()
		mt = types.OCILayerZStd
	default:
		buf.Write(raw)
		mt = types.OCIUncompressedLayer
	}
	return &testLayer{
		compressed: buf.Bytes(), uncompressed: raw,
		digest: sha(buf.Bytes()), diffID: sha(raw),
		mediaType: mt, reads: new(atomic.Int32),
	}
}

// richTar is a layer with every kind of entry the overlay format cares about.
func richTar(t *testing.T, tag string) []byte {
	return layerTar(t,
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/hello", typ: tar.TypeReg, mode: 0o644, uid: 1000, gid: 1000, body: "hello " + tag},
		entry{name: "etc/hello.link", typ: tar.TypeLink, body: "etc/hello"},
		entry{name: "etc/.wh.gone", typ: tar.TypeReg, mode: 0o644},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, body: "/bin/busybox"},
		entry{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "su"},
		entry{name: "opt/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		entry{name: "opt/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
	)
}

// imageOf builds an image from layers, created at a fixed time.
func imageOf(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.CreatedAt(img, v1.Time{Time: time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// openStore opens a store in a fresh directory, closed at cleanup.
func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// imageOfLayer is imageOf for code without a testing.T (the test helper).
func imageOfLayer(l v1.Layer) v1.Image {
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		panic(err)
	}
	return img
}
