package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CacheMount returns the persistent directory of the RUN --mount=type=cache with this id,
// under <root>/cache/mounts/. created is set when this call made it, so the caller can give it
// its owner and mode. With exclusive, the directory is locked until release is called (sharing
// locked or private); otherwise builds may use it at the same time (sharing shared).
func (s *Store) CacheMount(ctx context.Context, id string, exclusive bool) (dir string, created bool, release func(), err error) {
	sum := sha256.Sum256([]byte(id))
	key := hex.EncodeToString(sum[:16])
	dir = filepath.Join(s.root, "cache", "mounts", key)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", false, nil, fmt.Errorf("creating the cache mount directory: %w", err)
	}
	release = func() {}
	if exclusive {
		if release, err = s.lockResource(ctx, "cachemount-"+key); err != nil {
			return "", false, nil, err
		}
	}
	if err := os.Mkdir(dir, 0o755); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		release()
		return "", false, nil, fmt.Errorf("creating cache mount %q: %w", id, err)
	}
	return dir, created, release, nil
}
