package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// overlay is the overlayfs snapshotter. Each snapshot is a directory under root holding
// upper/ (the diff, in overlay format), work/ (overlayfs's scratch space), merged/ (the
// mount point) and, for an empty stack, empty/ (the single lower overlayfs requires).
type overlay struct {
	root  string
	flags mountFlags
}

// NewOverlay returns the overlayfs snapshotter working under root (<store>/snapshots), which
// it creates. It mounts a tiny test overlay there first, deletes a lower file through it and
// checks the whiteout reached the upper dir; when that fails the error wraps ErrUnsupported.
func NewOverlay(root string, opts Options) (Snapshotter, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating snapshot root %s: %w", root, err)
	}
	flags := mountFlags{volatile: !opts.Durable}
	if err := checkOverlay(root, flags); err != nil {
		return nil, fmt.Errorf("overlayfs at %s: %w: %v", root, ErrUnsupported, err)
	}
	return &overlay{root: root, flags: flags}, nil
}

// checkOverlay mounts a test overlay under root and exercises copy-up and whiteouts.
func checkOverlay(root string, flags mountFlags) error {
	dir, err := os.MkdirTemp(root, "check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lower := filepath.Join(dir, "lower")
	if err := os.MkdirAll(filepath.Join(lower, "d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lower, "d", "f"), []byte("x"), 0o644); err != nil {
		return err
	}
	a, err := prepareOverlayDir(dir, []string{lower}, flags)
	if err != nil {
		return err
	}
	defer a.Release()
	if err := os.Remove(filepath.Join(a.Root(), "d", "f")); err != nil {
		return fmt.Errorf("deleting a lower file through the test mount: %w", err)
	}
	if err := os.WriteFile(filepath.Join(a.Root(), "new"), []byte("y"), 0o644); err != nil {
		return fmt.Errorf("writing through the test mount: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(a.upper(), "d", "f"), &st); err != nil {
		return fmt.Errorf("looking for the whiteout in the test upper dir: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		return fmt.Errorf("test overlay wrote a whiteout of mode %#o, not a 0/0 char device", st.Mode)
	}
	return a.unmount()
}

func (o *overlay) Prepare(ctx context.Context, lowers []string) (Active, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.root, "ov-")
	if err != nil {
		return nil, fmt.Errorf("creating overlay snapshot in %s: %w", o.root, err)
	}
	a, err := prepareOverlayDir(dir, lowers, o.flags)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("preparing overlay snapshot over %d lowers: %w", len(lowers), err)
	}
	return a, nil
}

// prepareOverlayDir creates upper, work and merged in dir and mounts lowers there.
func prepareOverlayDir(dir string, lowers []string, flags mountFlags) (*overlayActive, error) {
	a := &overlayActive{dir: dir}
	for _, sub := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if len(lowers) == 0 {
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil {
			return nil, err
		}
		lowers = []string{empty}
	}
	abs := make([]string, len(lowers))
	for i, l := range lowers {
		p, err := filepath.Abs(l)
		if err != nil {
			return nil, err
		}
		abs[i] = p
	}
	if err := mountOverlay(abs, a.upper(), filepath.Join(dir, "work"), a.Root(), flags); err != nil {
		return nil, err
	}
	a.lowers = abs
	a.mounted = true
	return a, nil
}

// overlayActive is one mounted overlay snapshot.
type overlayActive struct {
	dir     string
	lowers  []string // bottom first; nil for an empty rootfs
	mounted bool
}

func (a *overlayActive) Root() string  { return filepath.Join(a.dir, "merged") }
func (a *overlayActive) upper() string { return filepath.Join(a.dir, "upper") }

func (a *overlayActive) unmount() error {
	if !a.mounted {
		return nil
	}
	if err := unix.Unmount(a.Root(), 0); err != nil {
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmounting %s: %w", a.Root(), err)
		}
		// Something still holds the mount (a RUN process that outlived its step): detach it
		// so the upper dir is final for us; the kernel frees it when the last user goes.
		if err := unix.Unmount(a.Root(), unix.MNT_DETACH); err != nil {
			return fmt.Errorf("detaching %s: %w", a.Root(), err)
		}
	}
	a.mounted = false
	return nil
}

// Seal unmounts the overlay and renames its upper dir, the diff, to dest.
func (a *overlayActive) Seal(ctx context.Context, dest string) error {
	defer a.Release()
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("sealing snapshot %s: destination %s exists", a.dir, dest)
	}
	if err := a.unmount(); err != nil {
		return fmt.Errorf("sealing snapshot %s: %w", a.dir, err)
	}
	if err := pruneUnchangedDirs(ctx, a.upper(), a.lowers); err != nil {
		return fmt.Errorf("sealing snapshot %s: %w", a.dir, err)
	}
	if err := os.Rename(a.upper(), dest); err != nil {
		return fmt.Errorf("sealing snapshot %s: moving its diff to %s: %w", a.dir, dest, err)
	}
	return nil
}

// Release unmounts the overlay and deletes the snapshot's directory.
func (a *overlayActive) Release() error {
	if err := a.unmount(); err != nil {
		return err
	}
	if err := os.RemoveAll(a.dir); err != nil {
		return fmt.Errorf("removing snapshot %s: %w", a.dir, err)
	}
	return nil
}
