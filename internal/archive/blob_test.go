package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestBlobWriter(t *testing.T) {
	src := t.TempDir()
	buildTree(t, src)
	layer := writeDiff(t, src, WriteOptions{})
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	tests := []struct {
		compression string
		decompress  func(r io.Reader) (io.Reader, error)
	}{
		{Gzip, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
		{Zstd, func(r io.Reader) (io.Reader, error) {
			d, err := zstd.NewReader(r)
			return d, err
		}},
		{None, func(r io.Reader) (io.Reader, error) { return r, nil }},
	}
	for _, tc := range tests {
		t.Run(tc.compression, func(t *testing.T) {
			var out bytes.Buffer
			bw, err := NewBlobWriter(&out, tc.compression)
			if err != nil {
				t.Fatal(err)
			}
			// Odd-sized writes, as a tar writer makes them.
			for rest := layer; len(rest) > 0; {
				n := min(len(rest), 777)
				if _, err := bw.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if err := bw.Close(); err != nil {
				t.Fatal(err)
			}
			if got := bw.Digest().Hex; got != sum(out.Bytes()) {
				t.Errorf("digest %s, want %s", got, sum(out.Bytes()))
			}
			if bw.Size() != int64(out.Len()) {
				t.Errorf("size %d, want %d", bw.Size(), out.Len())
			}
			if bw.DiffID().Hex != sum(layer) || bw.UncompressedSize() != int64(len(layer)) {
				t.Errorf("diffID %s/%d, want %s/%d", bw.DiffID().Hex, bw.UncompressedSize(), sum(layer), len(layer))
			}
			r, err := tc.decompress(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			back, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(back, layer) {
				t.Fatalf("decompressed blob differs from the layer (err %v)", err)
			}
			if tc.compression == None && bw.Digest() != bw.DiffID() {
				t.Error("uncompressed blob digest differs from its diffID")
			}
		})
	}
	// Same layer, same blob: registries and caches dedupe by digest.
	for _, c := range []string{Gzip, Zstd} {
		big := bytes.Repeat(layer, 40) // several zstd blocks, so both encoder goroutines work
		if a, b := blobDigest(t, big, c), blobDigest(t, big, c); a != b {
			t.Errorf("%s: two compressions of one layer differ: %s, %s", c, a, b)
		}
	}
	if _, err := NewBlobWriter(io.Discard, "brotli"); err == nil {
		t.Error("unknown compression accepted")
	}
}

func blobDigest(t *testing.T, data []byte, compression string) string {
	t.Helper()
	bw, err := NewBlobWriter(io.Discard, compression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	return bw.Digest().String()
}
