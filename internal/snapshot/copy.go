package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// copySnapshotter is the fallback snapshotter: each snapshot is a plain copy of its merged
// lowers, and Seal finds the changes by comparing the copy with the lowers.
type copySnapshotter struct {
	root string
}

// NewCopy returns the copy snapshotter working under root, which it creates. It works on any
// filesystem that keeps owners, modes and xattrs.
func NewCopy(root string) (Snapshotter, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating snapshot root %s: %w", root, err)
	}
	return &copySnapshotter{root: root}, nil
}

func (s *copySnapshotter) Prepare(ctx context.Context, lowers []string) (Active, error) {
	dir, err := os.MkdirTemp(s.root, "cp-")
	if err != nil {
		return nil, fmt.Errorf("creating copy snapshot in %s: %w", s.root, err)
	}
	a := &copyActive{dir: dir}
	for i := len(lowers) - 1; i >= 0; i-- {
		p, err := filepath.Abs(lowers[i])
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		a.lowers = append(a.lowers, p)
	}
	if err := os.Mkdir(a.Root(), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("creating copy snapshot in %s: %w", s.root, err)
	}
	if err := copyMerged(ctx, newCopier(), a.lowers, a.Root()); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("copying %d lowers into snapshot %s: %w", len(lowers), dir, err)
	}
	return a, nil
}

// copyMerged copies the merged view of the directory made of dirs (topmost first) into the
// existing directory dst.
func copyMerged(ctx context.Context, c *copier, dirs []string, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	children, err := mergedChildren(dirs)
	if err != nil {
		return err
	}
	for _, n := range sortedNames(children) {
		e := children[n]
		target := filepath.Join(dst, n)
		if !e.isDir() {
			if err := c.copyEntry(e.path, target, &e.st); err != nil {
				return err
			}
			continue
		}
		if err := os.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", target, err)
		}
		if err := copyMerged(ctx, c, e.dirs, target); err != nil {
			return err
		}
		if err := copyMeta(e.path, target, &e.st); err != nil {
			return err
		}
	}
	return nil
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// copyActive is one copy snapshot: dir/rootfs is the root, dir/diff the diff being committed.
type copyActive struct {
	dir    string
	lowers []string // topmost first
}

func (a *copyActive) Root() string { return filepath.Join(a.dir, "rootfs") }

// Seal writes what differs between the root and the lowers, in overlay format, to a diff
// directory and renames it to dest.
func (a *copyActive) Seal(ctx context.Context, dest string) error {
	defer a.Release()
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("sealing snapshot %s: destination %s exists", a.dir, dest)
	}
	diff := filepath.Join(a.dir, "diff")
	if err := os.Mkdir(diff, 0o755); err != nil {
		return fmt.Errorf("sealing snapshot %s: %w", a.dir, err)
	}
	d := &differ{copier: newCopier()}
	if _, err := d.diffDir(ctx, a.Root(), a.lowers, diff); err != nil {
		return fmt.Errorf("sealing snapshot %s: comparing with its lowers: %w", a.dir, err)
	}
	if err := os.Rename(diff, dest); err != nil {
		return fmt.Errorf("sealing snapshot %s: moving its diff to %s: %w", a.dir, dest, err)
	}
	return nil
}

// Release deletes the snapshot.
func (a *copyActive) Release() error {
	if err := os.RemoveAll(a.dir); err != nil {
		return fmt.Errorf("removing snapshot %s: %w", a.dir, err)
	}
	return nil
}

// whiteout creates an overlay whiteout at p.
func whiteout(p string) error {
	if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("creating whiteout %s: %w", p, err)
	}
	return nil
}
