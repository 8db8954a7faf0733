// Package store is kiln's local content store: content-addressed blobs,
// unpacked layers in overlay format, local images and the working space of
// builds, all under one root directory (layout in docs/contracts.md).
//
// Every write is atomic: data is written under <root>/tmp and renamed into
// place, so a build killed at any point leaves only garbage in tmp/, which
// the next Open removes.
//
// Locking. Several builds, in one process or several, may use one store at
// once. Nothing serialises whole builds; instead each shared resource has its
// own flock:
//   - <root>/lock: Lock takes it shared for the duration of a build, so a
//     future maintenance command (prune, gc) can take it exclusively and know
//     no build is running. Builds never exclude each other through it.
//   - <root>/locks/layer-<hex>: held while a layer with that diffID is being
//     unpacked or added, so each layer is unpacked once.
//   - <root>/locks/index: held while index.json is read, changed and replaced.
//   - every open Store owns a session directory <root>/tmp/<id>, flocked for
//     the Store's lifetime; Open removes the sessions nobody holds any more
//     (left by killed processes) and leaves live ones alone.
//
// Blobs need no lock: they are named by their content, so two writers of the
// same blob rename identical files over each other.
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrNotFound is wrapped by errors about images or blobs the store does not hold.
var ErrNotFound = errors.New("not found")

const (
	layoutFile    = "oci-layout"
	layoutContent = `{"imageLayoutVersion":"1.0.0"}`
	indexFile     = "index.json"
	emptyIndex    = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
)

// Store is an open local store. It is safe for concurrent use.
type Store struct {
	root    string
	session string   // this Store's directory under tmp/
	held    *os.File // flock on session, released by Close or process exit

	// fetch downloads the blobs of layers kept unpacked only (SetFetcher).
	fetch    Fetcher
	fetchCtx context.Context

	closeOnce sync.Once
}

// Open opens the store at root, creating its layout when missing, and
// removes temporary entries left by builds that were killed.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", root, err)
	}
	s := &Store{root: abs}
	if err := s.createLayout(); err != nil {
		return nil, fmt.Errorf("opening store %s: %w", abs, err)
	}
	if err := s.startSession(); err != nil {
		return nil, fmt.Errorf("opening store %s: %w", abs, err)
	}
	return s, nil
}

// Root returns the store's root directory (absolute).
func (s *Store) Root() string { return s.root }

// Close releases the Store's session; its temporary entries become garbage
// for the next Open. Paths returned earlier stay valid, except those under
// TempDir.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = os.RemoveAll(s.session)
		if cerr := s.held.Close(); err == nil {
			err = cerr
		}
	})
	if err != nil {
		return fmt.Errorf("closing store %s: %w", s.root, err)
	}
	return nil
}

// createLayout makes the directories and files of an empty store; existing
// ones are left as they are.
func (s *Store) createLayout() error {
	for _, dir := range []string{"blobs/sha256", "remote/sha256", "layers", "snapshots", "tmp", "cache", "locks"} {
		if err := os.MkdirAll(filepath.Join(s.root, dir), 0o700); err != nil {
			return err
		}
	}
	for name, content := range map[string]string{layoutFile: layoutContent, indexFile: emptyIndex, "lock": ""} {
		if err := createIfMissing(filepath.Join(s.root, name), content); err != nil {
			return err
		}
	}
	return nil
}

// createIfMissing writes content to path unless path exists, atomically:
// the file is linked into place only once complete.
func createIfMissing(path, content string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// link fails with EEXIST when a concurrent Open won the race: fine.
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// startSession removes stale sessions under tmp/ and creates this Store's
// own, flocked session directory. The scan and the creation happen under an
// exclusive flock on tmp/ itself, so a session is never seen unlocked by a
// concurrent Open between its creation and its locking.
func (s *Store) startSession() error {
	tmp := filepath.Join(s.root, "tmp")
	guard, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer guard.Close()
	if err := flockRetry(int(guard.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", tmp, err)
	}
	if err := removeStale(tmp); err != nil {
		return err
	}
	session, err := os.MkdirTemp(tmp, "s-")
	if err != nil {
		return err
	}
	held, err := os.Open(session)
	if err != nil {
		return err
	}
	if err := flockRetry(int(held.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		held.Close()
		return fmt.Errorf("locking session %s: %w", session, err)
	}
	s.session, s.held = session, held
	return nil
}

// removeStale deletes every entry of tmp that is not a session some open
// Store still holds.
func removeStale(tmp string) error {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(tmp, e.Name())
		if e.IsDir() && sessionInUse(path) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("removing stale temporary %s: %w", path, err)
		}
	}
	return nil
}

// sessionInUse reports whether another Store holds the session at path.
func sessionInUse(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close() // closing drops the probe lock if we got it
	err = flockRetry(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	return errors.Is(err, unix.EWOULDBLOCK)
}

// TempDir makes a fresh temporary directory under <root>/tmp, on the same
// filesystem as layers/ so it can be renamed into the store. pattern follows
// os.MkdirTemp.
func (s *Store) TempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp(s.session, pattern)
	if err != nil {
		return "", fmt.Errorf("making temporary directory in store %s: %w", s.root, err)
	}
	return dir, nil
}

// tempFile makes a fresh temporary file in this Store's session.
func (s *Store) tempFile(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(s.session, pattern)
	if err != nil {
		return nil, fmt.Errorf("making temporary file in store %s: %w", s.root, err)
	}
	return f, nil
}
