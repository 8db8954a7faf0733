package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// LayerDir returns <root>/layers/<hex of diffID>, the layer unpacked in
// overlay format, and whether it exists.
func (s *Store) LayerDir(diffID v1.Hash) (string, bool) {
	dir := s.layerPath(diffID)
	fi, err := os.Lstat(dir)
	return dir, err == nil && fi.IsDir()
}

func (s *Store) layerPath(diffID v1.Hash) string {
	return filepath.Join(s.root, "layers", diffID.Hex)
}

// layerLock is the name of the resource lock of one layer.
func layerLock(diffID v1.Hash) string { return "layer-" + diffID.Hex }

// AddLayerDir atomically renames src, a finished overlay-format directory
// under tmp/ or snapshots/, to layers/<hex of diffID> and returns the new
// path. When that layer is already stored, src is removed and the existing
// directory kept. The caller vouches that src's content has this diffID.
func (s *Store) AddLayerDir(src string, diffID v1.Hash) (string, error) {
	unlock, err := s.lockResource(context.Background(), layerLock(diffID))
	if err != nil {
		return "", fmt.Errorf("adding layer %s: %w", diffID, err)
	}
	defer unlock()
	return s.addLayerDirLocked(src, diffID)
}

// addLayerDirLocked is AddLayerDir for callers holding the layer's lock.
func (s *Store) addLayerDirLocked(src string, diffID v1.Hash) (string, error) {
	if diffID.Algorithm != "sha256" || len(diffID.Hex) != 64 {
		return "", fmt.Errorf("adding layer %s: not a sha256 diffID", diffID)
	}
	dst, exists := s.LayerDir(diffID)
	if exists {
		if err := os.RemoveAll(src); err != nil {
			return "", fmt.Errorf("adding layer %s: removing duplicate %s: %w", diffID, src, err)
		}
		return dst, nil
	}
	if err := os.Rename(src, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("adding layer %s: %s appeared without holding its lock: %w", diffID, dst, err)
		}
		return "", fmt.Errorf("adding layer %s from %s: %w", diffID, src, err)
	}
	return dst, nil
}
