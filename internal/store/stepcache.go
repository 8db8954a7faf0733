package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CachedStep is what a build step produced, recorded under its cache key: a layer, or nothing
// (a step that changed no file, or only the config), and when it was made, so that a rebuild
// from the cache writes the same history and so the same image.
type CachedStep struct {
	Layer   *v1.Descriptor `json:"layer,omitempty"`
	DiffID  *v1.Hash       `json:"diffID,omitempty"`
	Created time.Time      `json:"created,omitzero"`
}

// stepPath is where the step cached under key is recorded. Keys are hex digests.
func (s *Store) stepPath(key string) string {
	return filepath.Join(s.root, "cache", "steps", key+".json")
}

// CachedStep returns the step recorded under key when the store still holds its layer's blob
// (its unpacked directory may be gone, or not made yet: it is unpacked when needed), or the
// layer's directory for a layer it keeps only unpacked (KeptLayer).
func (s *Store) CachedStep(key string) (CachedStep, bool) {
	data, err := os.ReadFile(s.stepPath(key))
	if err != nil {
		return CachedStep{}, false
	}
	var step CachedStep
	if json.Unmarshal(data, &step) != nil {
		return CachedStep{}, false
	}
	if step.Layer == nil {
		return step, true
	}
	if step.DiffID == nil {
		return CachedStep{}, false
	}
	if _, kept := s.KeptLayer(step.Layer.MediaType, step.Layer.Digest, *step.DiffID); !kept && !s.HasBlob(step.Layer.Digest) {
		return CachedStep{}, false
	}
	return step, true
}

// RecordStep records step under key, atomically.
func (s *Store) RecordStep(key string, step CachedStep) error {
	data, err := json.Marshal(step)
	if err != nil {
		return fmt.Errorf("recording build step %s: %w", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(s.stepPath(key)), 0o755); err != nil {
		return fmt.Errorf("recording build step %s: %w", key, err)
	}
	return s.writeFileAtomic(s.stepPath(key), data)
}

// writeFileAtomic writes data to path through a synced temporary file and a rename, so a
// reader sees the old content or the new, never part of it.
func (s *Store) writeFileAtomic(path string, data []byte) error {
	f, err := s.tempFile("write-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
