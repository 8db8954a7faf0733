// Package image assembles OCI and Docker schema-2 images from a config and layer blobs that are
// already in the store, and models the image config the way Docker writes it. Everything it
// returns implements go-containerregistry's v1 interfaces, so outputs (local store, registry,
// OCI layout, docker archive) take it as it is.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/kiln-build/kiln/internal/archive"
)

// Layer is a layer blob whose digests are all known, so nothing is read to answer Digest,
// DiffID or Size. The blob is stored at Path; or, for an uncompressed layer that was never
// stored as a blob, written again from the layer's directory Dir whenever it is read; or, for
// a layer pulled from a registry, downloaded again from its Source. It implements v1.Layer.
type Layer struct {
	// Path is the blob on disk.
	Path string
	// Dir, when set, is the layer unpacked in overlay format, and there is no blob at Path:
	// the blob is the uncompressed tar archive.WriteDiff writes of Dir, checked against Diff
	// as it is read.
	Dir string
	// Desc is the blob's digest, size and media type.
	Desc v1.Descriptor
	// Diff is the digest of the uncompressed tar (the config's diff_id).
	Diff v1.Hash
	// Source, when set, is the repository the layer was pulled from, and there is no blob at
	// Path: fetch downloads it from there (the store keeps pulled layers unpacked only).
	Source string
	fetch  func() (io.ReadCloser, error)
}

var _ v1.Layer = (*Layer)(nil)

// Digest returns the digest of the compressed blob.
func (l *Layer) Digest() (v1.Hash, error) { return l.Desc.Digest, nil }

// DiffID returns the digest of the uncompressed tar.
func (l *Layer) DiffID() (v1.Hash, error) { return l.Diff, nil }

// Size returns the size of the compressed blob.
func (l *Layer) Size() (int64, error) { return l.Desc.Size, nil }

// MediaType returns the blob's media type.
func (l *Layer) MediaType() (types.MediaType, error) { return l.Desc.MediaType, nil }

// SourceRepository returns the repository the layer's blob is to be had from, or "" when the
// store holds it: a push to the same registry mounts it from there.
func (l *Layer) SourceRepository() string { return l.Source }

// Compressed opens the blob.
func (l *Layer) Compressed() (io.ReadCloser, error) {
	if l.Dir != "" {
		return l.regenerate(), nil
	}
	if l.fetch != nil {
		return l.fetch()
	}
	f, err := os.Open(l.Path)
	if err != nil {
		return nil, fmt.Errorf("opening layer %s: %w", l.Desc.Digest, err)
	}
	return f, nil
}

// Uncompressed opens the blob and decompresses it as its media type says.
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	f, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	switch l.Desc.MediaType {
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return f, nil
	case types.OCILayerZStd:
		d, err := zstd.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("decompressing layer %s: %w", l.Desc.Digest, err)
		}
		return &closers{Reader: d, close: func() error { d.Close(); return f.Close() }}, nil
	default:
		z, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("decompressing layer %s: %w", l.Desc.Digest, err)
		}
		return &closers{Reader: z, close: func() error { z.Close(); return f.Close() }}, nil
	}
}

// regenerate writes the layer's tar again from its directory, through a pipe, and fails the
// read that reaches its end when the tar's digest is not the layer's diffID: the directory
// changed since the layer was made, and no registry or archive may get a blob that does not
// match its descriptor.
func (l *Layer) regenerate() io.ReadCloser {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		h := sha256.New()
		err := archive.WriteDiff(ctx, io.MultiWriter(pw, h), l.Dir, archive.WriteOptions{})
		if got := (v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}); err == nil && got != l.Diff {
			err = fmt.Errorf("layer %s: its directory %s now archives as %s: it changed after the layer was made", l.Diff, l.Dir, got)
		}
		pw.CloseWithError(err)
	}()
	return &closers{Reader: pr, close: func() error { cancel(); return pr.Close() }}
}

type closers struct {
	io.Reader
	close func() error
}

func (c *closers) Close() error { return c.close() }

// Compression names a layer compression.
type Compression string

// The layer compressions kiln writes. Uncompressed layers are not stored as blobs: the store
// keeps them unpacked, and their blob is written again from the directory when it is read
// (Layer.Dir).
const (
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
	Uncompressed Compression = "none"
)

// Format is the manifest format of an image: OCI or Docker schema 2.
type Format string

// The image formats kiln writes.
const (
	OCI    Format = "oci"
	Docker Format = "docker"
)

// ParseFormat validates a --format value.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case OCI, Docker:
		return Format(s), nil
	case "":
		return OCI, nil
	}
	return "", fmt.Errorf("unknown image format %q: use oci or docker", s)
}

// LayerMediaType is the media type of a layer blob compressed with c in format f.
func LayerMediaType(f Format, c Compression) (types.MediaType, error) {
	switch {
	case f == Docker && c == Gzip:
		return types.DockerLayer, nil
	case f == Docker && c == Uncompressed:
		return types.DockerUncompressedLayer, nil
	case f == Docker:
		return "", fmt.Errorf("docker format images cannot hold %s layers: use --format oci", c)
	case c == Zstd:
		return types.OCILayerZStd, nil
	case c == Uncompressed:
		return types.OCIUncompressedLayer, nil
	default:
		return types.OCILayer, nil
	}
}

// convertMediaType returns the media type a layer blob of media type mt gets in format f; the
// bytes stay the same.
func convertMediaType(f Format, mt types.MediaType) (types.MediaType, error) {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		if f == Docker {
			return types.DockerLayer, nil
		}
		return types.OCILayer, nil
	case types.DockerUncompressedLayer, types.OCIUncompressedLayer:
		if f == Docker {
			return types.DockerUncompressedLayer, nil
		}
		return types.OCIUncompressedLayer, nil
	case types.OCILayerZStd:
		if f == Docker {
			return "", fmt.Errorf("a zstd layer cannot go into a docker format image: use --format oci")
		}
		return mt, nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer:
		return mt, nil
	}
	return "", fmt.Errorf("unsupported layer media type %s", mt)
}
