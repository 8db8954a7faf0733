package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a blocked lock is retried while waiting for it; the
// wait itself is bounded only by the caller's context.
const lockPoll = 20 * time.Millisecond

// Lock marks the store as in use by a build: a shared flock on <root>/lock,
// held until unlock is called (or the process dies). Any number of builds
// hold it at once; it only waits for an exclusive holder (store maintenance).
// Concurrent builds are kept apart by the finer locks described in the
// package documentation, not by this one.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	path := filepath.Join(s.root, "lock")
	f, err := lockFile(ctx, path, unix.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("locking store %s: %w", s.root, err)
	}
	return func() { f.Close() }, nil
}

// lockResource takes the exclusive lock <root>/locks/<name>, waiting for it
// until ctx is done.
func (s *Store) lockResource(ctx context.Context, name string) (unlock func(), err error) {
	f, err := lockFile(ctx, filepath.Join(s.root, "locks", name), unix.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("locking %s in store %s: %w", name, s.root, err)
	}
	return func() { f.Close() }, nil
}

// lockFile opens (creating) path and flocks it with how (LOCK_SH or
// LOCK_EX). Lock files are never removed: removing one while someone waits
// on it would let two holders lock different inodes.
func lockFile(ctx context.Context, path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := flockRetry(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

// flockRetry is unix.Flock, repeated when interrupted by a signal.
func flockRetry(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
