package archive

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Compression names accepted by NewBlobWriter.
const (
	Gzip = "gzip"
	Zstd = "zstd"
	None = "none"
)

// BlobWriter compresses an uncompressed layer tar written to it into an underlying writer and
// hashes both sides as the bytes pass: once closed it knows the blob's digest and size and the
// layer's diffID and uncompressed size. It never holds a layer in memory: writes go through a
// blockPipe to a goroutine that compresses, so the caller reading files and the compressor
// work at the same time.
type BlobWriter struct {
	raw        *hashCounter   // uncompressed side; unused without compression (compressed is the same bytes)
	compressed *hashCounter   // what reaches the underlying writer
	enc        io.WriteCloser // compressor writing into compressed; nil for "none"
	pipe       *blockPipe
	done       chan struct{} // closed when the compressor goroutine has ended
	err        error         // the compressor's error, read after done
	closed     bool
}

// NewBlobWriter returns a BlobWriter compressing with compression ("gzip", "zstd" or "none";
// "" means gzip) into w. Close must be called to flush the compressor and end its goroutine;
// it does not close w.
func NewBlobWriter(w io.Writer, compression string) (*BlobWriter, error) {
	b := &BlobWriter{raw: newHashCounter(io.Discard), compressed: newHashCounter(w)}
	switch compression {
	case Gzip, "":
		// Parallel gzip (pigz's method) at the default level: one gzip member any reader takes.
		b.enc = newPgzipWriter(b.compressed, flate.DefaultCompression)
	case Zstd:
		enc, err := zstd.NewWriter(b.compressed, zstd.WithEncoderConcurrency(2))
		if err != nil {
			return nil, fmt.Errorf("starting zstd encoder: %w", err)
		}
		b.enc = enc
	case None:
	default:
		return nil, fmt.Errorf("unknown layer compression %q (want gzip, zstd or none)", compression)
	}
	b.pipe = newBlockPipe()
	b.done = make(chan struct{})
	go b.compress()
	return b, nil
}

// compress is the goroutine that feeds the pipe's blocks to the compressor (or straight to
// the underlying writer) and flushes the compressor at the end of the stream.
func (b *BlobWriter) compress() {
	defer close(b.done)
	defer b.pipe.CloseRead() // on an error, the writer's next write fails
	out := io.Writer(b.compressed)
	if b.enc != nil {
		out = b.enc
	}
	if _, err := io.Copy(out, b.pipe); err != nil {
		b.err = err
		return
	}
	if b.enc != nil {
		if err := b.enc.Close(); err != nil {
			b.err = fmt.Errorf("finishing layer compression: %w", err)
		}
	}
}

// Write hashes p as layer content and queues it for the compressor. It fails once the
// compressor has failed.
func (b *BlobWriter) Write(p []byte) (int, error) {
	if b.closed {
		return 0, fmt.Errorf("writing to a closed blob writer")
	}
	if b.enc != nil {
		b.raw.Write(p) // a hash and a counter never fail
	}
	n, err := b.pipe.Write(p)
	if errors.Is(err, errPipeReaderGone) {
		<-b.done
		err = fmt.Errorf("compressing layer: %w", b.err)
	}
	return n, err
}

// Close flushes the compressor and waits for it. The digests are valid after it returns nil.
func (b *BlobWriter) Close() error {
	if !b.closed {
		b.closed = true
		b.pipe.CloseWrite(nil)
		<-b.done
	}
	return b.err
}

// Digest is the digest of the compressed blob (what a manifest names).
func (b *BlobWriter) Digest() v1.Hash { return b.compressed.hash() }

// Size is the size in bytes of the compressed blob.
func (b *BlobWriter) Size() int64 { return b.compressed.n }

// DiffID is the digest of the uncompressed layer tar (what an image config names). Without
// compression the blob is that tar, hashed once, on the goroutine's side.
func (b *BlobWriter) DiffID() v1.Hash {
	if b.enc == nil {
		return b.compressed.hash()
	}
	return b.raw.hash()
}

// UncompressedSize is the size in bytes of the uncompressed layer tar.
func (b *BlobWriter) UncompressedSize() int64 {
	if b.enc == nil {
		return b.compressed.n
	}
	return b.raw.n
}

// hashCounter passes writes to w while hashing and counting them.
type hashCounter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newHashCounter(w io.Writer) *hashCounter { return &hashCounter{w: w, h: sha256.New()} }

func (c *hashCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func (c *hashCounter) hash() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(c.h.Sum(nil))}
}
