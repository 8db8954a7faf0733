package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// differ writes what differs between a copy snapshot's root and its lowers into an
// overlay-format directory: changed and new entries as copies, deleted ones as whiteouts.
type differ struct {
	copier *copier
}

// diffDir compares the directory active with the merged directory made of lowers (topmost
// first) and writes the differences into dest, an existing directory. It reports whether it
// wrote anything.
func (d *differ) diffDir(ctx context.Context, active string, lowers []string, dest string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	lower, err := mergedChildren(lowers)
	if err != nil {
		return false, err
	}
	names, err := readNames(active)
	if err != nil {
		return false, err
	}
	present := make(map[string]bool, len(names))
	changed := false
	for _, n := range names {
		present[n] = true
	}
	for _, n := range sortedNames(lower) {
		if !present[n] {
			if err := whiteout(filepath.Join(dest, n)); err != nil {
				return false, err
			}
			changed = true
		}
	}
	for _, n := range sortedNames(present) {
		c, err := d.diffEntry(ctx, filepath.Join(active, n), lower[n], filepath.Join(dest, n))
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	return changed, nil
}

// diffEntry compares one entry of the snapshot with its lower counterpart (nil when the
// lowers lack it) and writes it to dest when it differs.
func (d *differ) diffEntry(ctx context.Context, p string, l *lowerEntry, dest string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false, fmt.Errorf("inspecting %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && l != nil && l.isDir() {
		return d.diffSubdir(ctx, p, &st, l, dest)
	}
	if l != nil && sameEntry(p, &st, l) {
		same, err := sameContent(p, &st, l)
		if err != nil || same {
			return false, err
		}
	}
	return true, d.copier.copyTree(p, dest, &st)
}

// diffSubdir compares a directory present in both: dest keeps it, with its metadata, only if
// it or something under it changed.
func (d *differ) diffSubdir(ctx context.Context, p string, st *unix.Stat_t, l *lowerEntry, dest string) (bool, error) {
	if err := os.Mkdir(dest, 0o700); err != nil {
		return false, fmt.Errorf("creating %s: %w", dest, err)
	}
	sub, err := d.diffDir(ctx, p, l.dirs, dest)
	if err != nil {
		return false, err
	}
	if sub || !sameEntry(p, st, l) {
		return true, copyMeta(p, dest, st)
	}
	return false, os.Remove(dest)
}

// sameEntry compares type, mode, owner, mtime, device number and xattrs; not atime or content.
func sameEntry(p string, st *unix.Stat_t, l *lowerEntry) bool {
	ls := &l.st
	if st.Mode != ls.Mode || st.Uid != ls.Uid || st.Gid != ls.Gid || st.Rdev != ls.Rdev ||
		st.Mtim != ls.Mtim || (st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Size != ls.Size) {
		return false
	}
	a, err1 := readXattrs(p)
	b, err2 := readXattrs(l.path)
	if err1 != nil || err2 != nil || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// sameContent compares symlink targets and regular files' bytes.
func sameContent(p string, st *unix.Stat_t, l *lowerEntry) (bool, error) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		a, err := os.Readlink(p)
		if err != nil {
			return false, err
		}
		b, err := os.Readlink(l.path)
		return a == b, err
	case unix.S_IFREG:
		return sameBytes(p, l.path)
	}
	return true, nil
}

func sameBytes(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, fmt.Errorf("reading %s: %w", a, ea)
		}
		if eb != nil {
			return false, fmt.Errorf("reading %s: %w", b, eb)
		}
	}
}
