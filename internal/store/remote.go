package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A layer pulled from a registry is kept unpacked only, as buildah, Docker and containerd
// (with discard_unpacked_layers) keep them: its compressed blob is not stored, and
// remote/sha256/<hex> names the repository it came from. When something needs the blob (a
// push to another registry, an export to a file), it is downloaded again from there, by
// digest, and verified; a push to the same registry mounts it. That saves the blob's size per
// base image, 65 MiB for Debian's, and its write during the pull.

// Sourced is a layer that knows the repository it is pulled from, such as the layers the
// registry client returns. Only such layers are kept without their blob.
type Sourced interface {
	SourceRepository() string
}

// Fetcher downloads a blob from a repository, verified against desc.
type Fetcher func(ctx context.Context, repository string, desc v1.Descriptor) (io.ReadCloser, error)

// remotePath is the record of a blob the store does not hold, naming where it came from.
func (s *Store) remotePath(digest v1.Hash) string {
	return filepath.Join(s.root, "remote", digest.Algorithm, digest.Hex)
}

// recordSource notes that the blob digest, not stored, can be downloaded from repository.
func (s *Store) recordSource(digest v1.Hash, repository string) error {
	if err := s.writeFileAtomic(s.remotePath(digest), []byte(repository+"\n")); err != nil {
		return fmt.Errorf("recording the source of layer %s: %w", digest, err)
	}
	return nil
}

// BlobSource returns the repository the blob digest was pulled from, when the store keeps
// only its unpacked layer.
func (s *Store) BlobSource(digest v1.Hash) (string, bool) {
	if digest.Algorithm != "sha256" || len(digest.Hex) != 64 {
		return "", false
	}
	b, err := os.ReadFile(s.remotePath(digest))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// hasSource reports whether the store keeps the layer of blob digest unpacked only, with the
// repository it came from.
func (s *Store) hasSource(digest v1.Hash) bool {
	_, ok := s.BlobSource(digest)
	return ok
}

// SetFetcher lets the store download the blobs it keeps no copy of, with f, for as long as
// ctx lasts. Call it once, before the store is used; without it, opening such a blob fails.
func (s *Store) SetFetcher(ctx context.Context, f Fetcher) {
	s.fetchCtx, s.fetch = ctx, f
}

// OpenBlob opens the blob of desc: the stored file, or, for a layer the store keeps only
// unpacked, a verified download from the repository it was pulled from.
func (s *Store) OpenBlob(desc v1.Descriptor) (io.ReadCloser, error) {
	f, err := os.Open(s.BlobPath(desc.Digest))
	if err == nil {
		return f, nil
	}
	repo, ok := s.BlobSource(desc.Digest)
	if !ok {
		return nil, fmt.Errorf("opening layer %s: %w", desc.Digest, err)
	}
	if s.fetch == nil {
		return nil, fmt.Errorf("opening layer %s: the store keeps it only unpacked, and cannot download it from %s here", desc.Digest, repo)
	}
	rc, err := s.fetch(s.fetchCtx, repo, desc)
	if err != nil {
		return nil, fmt.Errorf("pulled layers are kept unpacked only: %w", err)
	}
	return rc, nil
}
