package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// indexLock is the resource lock guarding read-modify-write of index.json.
const indexLock = "index"

// readIndex reads index.json. It needs no lock: the file is only ever
// replaced whole, by rename.
func (s *Store) readIndex() (*v1.IndexManifest, error) {
	path := filepath.Join(s.root, indexFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	idx, err := v1.ParseIndexManifest(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return idx, nil
}

// writeIndex replaces index.json with idx: a synced temporary file renamed
// over the old one, so readers see the old index or the new, never a mix.
func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	path := filepath.Join(s.root, indexFile)
	if idx.Manifests == nil {
		idx.Manifests = []v1.Descriptor{}
	}
	idx.SchemaVersion = 2
	idx.MediaType = types.OCIImageIndex
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return s.writeFileAtomic(path, data)
}

// updateIndex runs change on index.json under the index lock and writes
// the result back.
func (s *Store) updateIndex(ctx context.Context, change func(*v1.IndexManifest) error) error {
	unlock, err := s.lockResource(ctx, indexLock)
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := change(idx); err != nil {
		return err
	}
	return s.writeIndex(idx)
}

// entryName returns the local name on an index entry ("" when dangling).
func entryName(d v1.Descriptor) string {
	return d.Annotations[refNameAnnotation]
}

// hasDigest reports whether any entry of manifests points at h.
func hasDigest(manifests []v1.Descriptor, h v1.Hash) bool {
	for _, m := range manifests {
		if m.Digest == h {
			return true
		}
	}
	return false
}
