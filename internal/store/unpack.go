package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/kiln-build/kiln/internal/archive"
)

// unpackJobs is how many layers are unpacked at once: enough to overlap
// network, decompression and disk on two to four cores.
const unpackJobs = 3

// Unpack makes sure every layer of img is stored: its compressed blob in
// blobs/ (tee'd from the one read) and its content in layers/<diffID>,
// extracted with archive.Extract. Digest and diffID are verified while the
// layer streams; a layer that does not match is not stored. Each layer is
// unpacked once per store, however many builds ask at the same time (a lock
// per diffID), and several layers are unpacked in parallel. It returns the
// layer directories, bottom layer first.
func (s *Store) Unpack(ctx context.Context, img v1.Image, opts archive.ExtractOptions) ([]string, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("unpacking image: listing layers: %w", err)
	}
	// go-containerregistry computes a layout layer's diffID by decompressing the whole blob;
	// the config lists them.
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("unpacking image: reading its config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) == len(layers) {
		for i, l := range layers {
			layers[i] = &knownDiffID{Layer: l, diffID: cfg.RootFS.DiffIDs[i]}
		}
	}
	return s.UnpackLayers(ctx, layers, opts)
}

// knownDiffID is a layer whose diffID is known without reading it; extraction still verifies it.
type knownDiffID struct {
	v1.Layer
	diffID v1.Hash
}

// DiffID implements v1.Layer.
func (l *knownDiffID) DiffID() (v1.Hash, error) { return l.diffID, nil }

// sourceOf returns the repository l is pulled from, when it is a Sourced layer.
func sourceOf(l v1.Layer) (string, bool) {
	if k, ok := l.(*knownDiffID); ok {
		l = k.Layer
	}
	if s, ok := l.(Sourced); ok && s.SourceRepository() != "" {
		return s.SourceRepository(), true
	}
	return "", false
}

// UnpackLayers is Unpack for layers that are not (all) of one image, such as layers of an
// imported build cache.
func (s *Store) UnpackLayers(ctx context.Context, layers []v1.Layer, opts archive.ExtractOptions) ([]string, error) {
	dirs := make([]string, len(layers))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(unpackJobs)
	for i, l := range layers {
		g.Go(func() error {
			dir, err := s.unpackLayer(ctx, l, opts)
			dirs[i] = dir
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return dirs, nil
}

// FetchBlobs makes sure the compressed blob of every layer is stored, without unpacking it
// (an image the store must hold, whose content no step reads). Blobs download in parallel and
// are verified against their digests.
func (s *Store) FetchBlobs(ctx context.Context, layers []v1.Layer) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(unpackJobs)
	for _, l := range layers {
		g.Go(func() error {
			digest, err := l.Digest()
			if err != nil {
				return fmt.Errorf("fetching layer: reading digest: %w", err)
			}
			if s.HasBlob(digest) || s.hasSource(digest) {
				return nil // stored, or unpacked with its source recorded
			}
			return s.fetchBlob(ctx, l, digest)
		})
	}
	return g.Wait()
}

// unpackLayer stores one layer, under its lock.
func (s *Store) unpackLayer(ctx context.Context, l v1.Layer, opts archive.ExtractOptions) (string, error) {
	digest, err := l.Digest()
	if err != nil {
		return "", fmt.Errorf("unpacking layer: reading digest: %w", err)
	}
	diffID, err := l.DiffID()
	if err != nil {
		return "", fmt.Errorf("unpacking layer %s: reading diffID: %w", digest, err)
	}
	unlock, err := s.lockResource(ctx, layerLock(diffID))
	if err != nil {
		return "", fmt.Errorf("unpacking layer %s: %w", digest, err)
	}
	defer unlock()

	dir, unpacked := s.LayerDir(diffID)
	switch {
	case unpacked && s.HasBlob(digest):
		return dir, nil
	case unpacked && s.isKept(l, digest):
		return dir, nil // its blob is the directory's tar
	case unpacked && s.hasSource(digest):
		return dir, nil // its blob stays in the registry it came from
	case unpacked:
		if repo, ok := sourceOf(l); ok {
			return dir, s.recordSource(digest, repo)
		}
		if err := s.fetchBlob(ctx, l, digest); err != nil {
			return "", err
		}
		return dir, nil
	}
	if err := s.extractLayer(ctx, l, digest, diffID, opts); err != nil {
		return "", err
	}
	return dir, nil
}

// isKept reports whether l, of blob digest digest, is a layer the store keeps only unpacked
// (KeptLayer). Its diffID is only asked for when its media type says it may be: a layer of an
// OCI layout computes it by decompressing its blob.
func (s *Store) isKept(l v1.Layer, digest v1.Hash) bool {
	mt, err := l.MediaType()
	if err != nil || mt != types.OCIUncompressedLayer && mt != types.DockerUncompressedLayer {
		return false
	}
	diffID, err := l.DiffID()
	if err != nil {
		return false
	}
	_, kept := s.KeptLayer(mt, digest, diffID)
	return kept
}

// fetchBlob stores the compressed blob of l, verified against digest.
func (s *Store) fetchBlob(ctx context.Context, l v1.Layer, digest v1.Hash) error {
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("fetching layer %s: %w", digest, err)
	}
	defer rc.Close()
	if _, _, err := s.WriteBlob(ctx, rc, digest); err != nil {
		return fmt.Errorf("fetching layer %s: %w", digest, err)
	}
	return nil
}

// extractLayer reads the compressed layer once (from blobs/ when stored
// there, else from l, tee'd into a new blob unless l comes from a registry),
// decompresses it, extracts it into a temporary directory while hashing both
// streams, and moves blob and directory into place only when digest and
// diffID both match. For a layer from a registry, it then records where the
// blob can be had again (remote.go).
func (s *Store) extractLayer(ctx context.Context, l v1.Layer, digest, diffID v1.Hash, opts archive.ExtractOptions) error {
	src, bw, repo, err := s.openCompressed(l, digest)
	if err != nil {
		return err
	}
	defer src.Close()
	if bw != nil {
		defer bw.discard()
	}
	// The blob being written hashes what it is given; a stored blob is hashed here.
	var in io.Reader = contextReader{ctx, src}
	var sum hash.Hash
	if bw != nil {
		in, sum = io.TeeReader(in, bw), bw.sha
	} else {
		sum = sha256.New()
		in = io.TeeReader(in, sum)
	}
	tmp, err := s.TempDir("layer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("unpacking layer %s: %w", digest, err)
	}
	gotDiffID, err := decompressAndExtract(ctx, in, func() { src.Close() }, tmp, opts)
	if err != nil {
		return fmt.Errorf("unpacking layer %s: %w", digest, err)
	}
	if got := (v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))}); got != digest {
		return fmt.Errorf("unpacking layer %s: digest mismatch: content is %s", digest, got)
	}
	if gotDiffID != diffID {
		return fmt.Errorf("unpacking layer %s: diffID mismatch: want %s, content is %s", digest, diffID, gotDiffID)
	}
	if bw != nil {
		if _, err := bw.commit(digest); err != nil {
			return fmt.Errorf("unpacking layer %s: %w", digest, err)
		}
	}
	if _, err := s.addLayerDirLocked(tmp, diffID); err != nil {
		return fmt.Errorf("unpacking layer %s: %w", digest, err)
	}
	if repo != "" {
		return s.recordSource(digest, repo)
	}
	return nil
}

// openCompressed opens the compressed layer: the stored blob when there is one, else l's
// stream, with a blobWriter to tee it into, or, when l comes from a registry, the repository
// to record instead.
func (s *Store) openCompressed(l v1.Layer, digest v1.Hash) (io.ReadCloser, *blobWriter, string, error) {
	if f, err := os.Open(s.BlobPath(digest)); err == nil {
		return f, nil, "", nil
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, nil, "", fmt.Errorf("fetching layer %s: %w", digest, err)
	}
	if repo, ok := sourceOf(l); ok {
		return rc, nil, repo, nil
	}
	bw, err := s.newBlobWriter()
	if err != nil {
		rc.Close()
		return nil, nil, "", err
	}
	return rc, bw, "", nil
}

// decompressAndExtract detects the compression of r (gzip, zstd or none), extracts the tar
// into dir and returns the digest of the uncompressed stream (the diffID). r is read to its
// end. Three goroutines share the work: one reads r (which may hash and store what it reads),
// one decompresses, and the caller's extracts and hashes the tar. Decompression, the longest,
// thus does nothing else. closeSrc makes a read of r that hangs return, when extraction fails.
func decompressAndExtract(ctx context.Context, r io.Reader, closeSrc func(), dir string, opts archive.ExtractOptions) (v1.Hash, error) {
	compressed := archive.ReadAhead(func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	}, closeSrc)
	defer compressed.Close()
	tarStream := archive.ReadAhead(func(w io.Writer) error {
		br := bufio.NewReaderSize(compressed, 64<<10)
		magic, _ := br.Peek(4)
		var src io.Reader = br
		switch {
		case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
			zr, err := gzip.NewReader(br)
			if err != nil {
				return fmt.Errorf("reading gzip: %w", err)
			}
			defer zr.Close()
			src = zr
		case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			zr, err := zstd.NewReader(br)
			if err != nil {
				return fmt.Errorf("reading zstd: %w", err)
			}
			defer zr.Close()
			src = zr
		}
		if _, err := io.Copy(w, src); err != nil {
			return err
		}
		// What follows the compressed stream is read too, so r is read to its end.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("reading after the compressed stream: %w", err)
		}
		return nil
	}, func() { compressed.Close() })
	defer tarStream.Close()
	uncompressed := sha256.New()
	hashed := io.TeeReader(tarStream, uncompressed)
	if err := archive.Extract(ctx, hashed, dir, opts); err != nil {
		return v1.Hash{}, err
	}
	if _, err := io.Copy(io.Discard, hashed); err != nil {
		return v1.Hash{}, fmt.Errorf("reading the end of the layer: %w", err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(uncompressed.Sum(nil))}, nil
}
