package archive

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand"
	"os/exec"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// pgzipSample is compressible text with some random runs, long enough for several blocks.
func pgzipSample(n int) []byte {
	r := rand.New(rand.NewSource(int64(n)))
	var b bytes.Buffer
	for b.Len() < n {
		if r.Intn(4) == 0 {
			chunk := make([]byte, r.Intn(5000))
			r.Read(chunk)
			b.Write(chunk)
		} else {
			b.WriteString("kiln layer content, repeated so that matches reach back across blocks\n")
		}
	}
	return b.Bytes()[:n]
}

func pgzip(t *testing.T, data []byte, chunk int) []byte {
	t.Helper()
	var out bytes.Buffer
	z := newPgzipWriter(&out, -1)
	for p := data; len(p) > 0; {
		n := min(len(p), chunk)
		if _, err := z.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	return out.Bytes()
}

func TestParallelGzipRoundTripsAndIsDeterministic(t *testing.T) {
	for _, n := range []int{0, 1, pgzipWindow - 1, pgzipBlockSize, pgzipBlockSize + 1, 5*pgzipBlockSize + 12345} {
		data := pgzipSample(n)
		gz := pgzip(t, data, 70001)
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("%d bytes: reading the header: %v", n, err)
		}
		zr.Multistream(false) // one member, not several
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: decompressed %d bytes (err %v), want the input back", n, len(got), err)
		}
		if rest, _ := io.ReadAll(bytes.NewReader(gz[len(gz):])); len(rest) != 0 {
			t.Fatalf("%d bytes: trailing data", n)
		}
		// The cuts follow the input, not the writes.
		if again := pgzip(t, data, 4096); !bytes.Equal(again, gz) {
			t.Errorf("%d bytes: written in other pieces, the output differs", n)
		}
		// Primed with the block before, each block compresses about as well as one stream.
		var single bytes.Buffer
		zw := kgzip.NewWriter(&single)
		zw.Write(data)
		zw.Close()
		if float64(len(gz)) > 1.01*float64(single.Len())+200 {
			t.Errorf("%d bytes: %d compressed in parallel, %d as one stream", n, len(gz), single.Len())
		}
	}
	// And gzip(1) agrees.
	if _, err := exec.LookPath("gzip"); err == nil {
		data := pgzipSample(3*pgzipBlockSize + 7)
		cmd := exec.Command("gzip", "-dc")
		cmd.Stdin = bytes.NewReader(pgzip(t, data, 1<<16))
		out, err := cmd.Output()
		if err != nil || !bytes.Equal(out, data) {
			t.Errorf("gzip -dc: %v, %d bytes back of %d", err, len(out), len(data))
		}
	}
}
