package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// BlobPath returns where the blob h is (or would be) stored.
func (s *Store) BlobPath(h v1.Hash) string {
	return filepath.Join(s.root, "blobs", h.Algorithm, h.Hex)
}

// HasBlob reports whether the blob h is stored.
func (s *Store) HasBlob(h v1.Hash) bool {
	_, err := os.Stat(s.BlobPath(h))
	return err == nil
}

// WriteBlob streams r into blobs/sha256/<hex> atomically (a temporary file,
// synced, then renamed), verifying the digest when want is not the zero
// Hash. It returns the digest and size of the blob. When want is given and
// already stored, r is not read at all.
func (s *Store) WriteBlob(ctx context.Context, r io.Reader, want v1.Hash) (v1.Hash, int64, error) {
	if want != (v1.Hash{}) {
		if want.Algorithm != "sha256" {
			return v1.Hash{}, 0, fmt.Errorf("writing blob %s: unsupported digest algorithm", want)
		}
		if fi, err := os.Stat(s.BlobPath(want)); err == nil {
			return want, fi.Size(), nil
		}
	}
	bw, err := s.newBlobWriter()
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer bw.discard()
	if _, err := io.Copy(bw, contextReader{ctx, r}); err != nil {
		return v1.Hash{}, 0, fmt.Errorf("writing blob %s: %w", describe(want), err)
	}
	h, err := bw.commit(want)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	return h, bw.size, nil
}

// describe names a blob that may not have a known digest yet.
func describe(h v1.Hash) string {
	if h == (v1.Hash{}) {
		return "(digest not given)"
	}
	return h.String()
}

// blobWriter writes a blob to a temporary file while hashing it; commit
// verifies and renames it into blobs/.
type blobWriter struct {
	s       *Store
	f       *os.File
	sha     hash.Hash
	size    int64
	flushed int64 // bytes whose writeback has been started
	done    bool
}

// writebackEvery is how many bytes a blobWriter lets the page cache hold before it starts
// writing them to disk, so that the fsync of commit has only the tail left to wait for: on a
// 65 MB layer blob, that fsync took 30-50 ms of the pull's end.
const writebackEvery = 8 << 20

func (s *Store) newBlobWriter() (*blobWriter, error) {
	f, err := s.tempFile("blob-")
	if err != nil {
		return nil, err
	}
	return &blobWriter{s: s, f: f, sha: sha256.New()}, nil
}

// Write implements io.Writer.
func (w *blobWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.sha.Write(p[:n])
	w.size += int64(n)
	if w.size-w.flushed >= writebackEvery {
		// Only a hint: an error here shows again in commit's fsync.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.size-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.size
	}
	return n, err
}

// digest returns the digest of what was written so far.
func (w *blobWriter) digest() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(w.sha.Sum(nil))}
}

// commit checks the digest against want (unless want is zero) and renames
// the file to its blob path. It returns the digest.
func (w *blobWriter) commit(want v1.Hash) (v1.Hash, error) {
	got := w.digest()
	if want != (v1.Hash{}) && got != want {
		return v1.Hash{}, fmt.Errorf("writing blob %s: digest mismatch: content is %s", want, got)
	}
	if err := w.f.Sync(); err != nil {
		return v1.Hash{}, fmt.Errorf("writing blob %s: %w", got, err)
	}
	if err := w.f.Close(); err != nil {
		return v1.Hash{}, fmt.Errorf("writing blob %s: %w", got, err)
	}
	w.done = true
	if err := os.Rename(w.f.Name(), w.s.BlobPath(got)); err != nil {
		os.Remove(w.f.Name())
		return v1.Hash{}, fmt.Errorf("writing blob %s: %w", got, err)
	}
	return got, nil
}

// discard removes the temporary file unless commit renamed it.
func (w *blobWriter) discard() {
	if !w.done {
		w.f.Close()
		os.Remove(w.f.Name())
	}
}

// contextReader stops reading once its context is done.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

// Read implements io.Reader.
func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
