package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"
)

// WriteOptions controls WriteDiff.
type WriteOptions struct {
	// SourceDateEpoch, when set, clamps every mtime later than it down to it
	// (SOURCE_DATE_EPOCH, https://reproducible-builds.org/specs/source-date-epoch/).
	SourceDateEpoch *time.Time
}

// WriteDiff writes the overlay-format directory dir (an overlay upper dir, or an unpacked
// layer) to w as an uncompressed OCI layer tar, as docs/contracts.md pins it: entries in
// depth-first order with siblings sorted by their tar name (so parents come first), names
// relative without a leading "./", directories ending in "/", numeric owners only, mtimes in
// whole seconds (clamped by opts), no atime or ctime, PAX records only where needed (long
// names, large ids, xattrs). Whiteouts (0/0 char devices, or files carrying
// user.overlay.whiteout) become empty `.wh.NAME` files owned by 0:0 with mode 0 and mtime 0;
// an opaque directory is followed by `DIR/.wh..wh..opq`, written the same way. Files sharing an
// inode within dir become tar hard links to the first of them. Xattrs are kept except overlay
// metadata. The root directory itself is not written. Two calls on the same tree write the same
// bytes.
func WriteDiff(ctx context.Context, w io.Writer, dir string, opts WriteOptions) error {
	return writeTree(ctx, w, dir, opts, prefetchBudget)
}

// writeTree is WriteDiff holding at most budget bytes of files read ahead.
func writeTree(ctx context.Context, w io.Writer, dir string, opts WriteOptions, budget int64) error {
	d := &differ{
		tw:     tar.NewWriter(w),
		opts:   opts,
		links:  make(map[inode]string),
		budget: semaphore.NewWeighted(budget),
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("writing layer from %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	err = d.walk(ctx, fd, dir, "")
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("writing layer from %s: %w", dir, err)
	}
	if err := d.tw.Close(); err != nil {
		return fmt.Errorf("writing layer from %s: finishing tar: %w", dir, err)
	}
	return nil
}

type inode struct{ dev, ino uint64 }

// differ holds the state of one WriteDiff call.
type differ struct {
	tw     *tar.Writer
	opts   WriteOptions
	links  map[inode]string    // first tar name of each multiply-linked inode
	buf    []byte              // file content on its way to tw
	budget *semaphore.Weighted // bytes of files read ahead (prefetch.go)
}

// child is one directory entry with its lstat result and its name in the tar.
type child struct {
	name, tarName string
	st            unix.Stat_t
	whiteout      bool
}

// walk writes the children of the directory open as dirfd, whose tar name is rel ("" for the
// root) and whose path, for messages, is shown. Every entry is reached from its parent's
// descriptor without following symlinks, so a tree that changes while it is written (a
// process left over from a RUN step) cannot lead the walk outside it.
func (d *differ) walk(ctx context.Context, dirfd int, shown, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	children, err := readChildren(dirfd)
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", shown, err)
	}
	slots, stop := d.prefetch(ctx, dirfd, children)
	defer stop()
	for i, c := range children {
		name := c.tarName
		if rel != "" {
			name = rel + "/" + c.tarName
		}
		if c.whiteout {
			if err := d.tw.WriteHeader(marker(name)); err != nil {
				return fmt.Errorf("writing whiteout %s: %w", name, err)
			}
			continue
		}
		if err := d.entry(ctx, dirfd, c.name, name, filepath.Join(shown, c.name), &c.st, slots[i]); err != nil {
			return err
		}
	}
	return nil
}

// subdir writes the opaque marker, if any, and the children of the directory open as fd,
// whose tar name is tarName.
func (d *differ) subdir(ctx context.Context, fd int, shown, tarName string) error {
	opaque, err := isOpaque(xattrTarget{fd: fd})
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	if opaque {
		if err := d.tw.WriteHeader(marker(tarName + "/" + opaqueMarker)); err != nil {
			return fmt.Errorf("writing opaque marker of %s: %w", tarName, err)
		}
	}
	return d.walk(ctx, fd, shown, tarName)
}

// readChildren lists the directory open as dirfd with each entry's lstat, sorted by tar name.
func readChildren(dirfd int) ([]child, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), ".")
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, err
	}
	children := make([]child, 0, len(names))
	for _, n := range names {
		c := child{name: n, tarName: n}
		if err := unix.Fstatat(dirfd, n, &c.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, fmt.Errorf("inspecting %s: %w", n, err)
		}
		if c.whiteout, err = isWhiteout(fdPath(dirfd, n), &c.st); err != nil {
			return nil, err
		}
		if c.whiteout {
			c.tarName = whiteoutPrefix + n
		}
		children = append(children, c)
	}
	sort.Slice(children, func(i, j int) bool { return children[i].tarName < children[j].tarName })
	return children, nil
}

// isWhiteout reports whether p is an overlay whiteout: a 0/0 char device, or an empty regular
// file carrying user.overlay.whiteout (the xattr form of kernel 6.7+).
func isWhiteout(p string, st *unix.Stat_t) (bool, error) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return st.Rdev == 0, nil
	case unix.S_IFREG:
		if st.Size != 0 {
			return false, nil
		}
		return hasXattr(p, "user.overlay.whiteout")
	}
	return false, nil
}

// isOpaque reports whether the directory t is an opaque overlay directory.
func isOpaque(t xattrTarget) (bool, error) {
	for _, name := range []string{OpaqueXattr, "trusted.overlay.opaque"} {
		var buf [8]byte
		n, err := t.get(name, buf[:])
		if err == nil && string(buf[:n]) == "y" {
			return true, nil
		}
		if err != nil && !isNoXattr(err) {
			return false, fmt.Errorf("reading %s: %w", name, err)
		}
	}
	return false, nil
}

func hasXattr(p, name string) (bool, error) {
	_, err := unix.Lgetxattr(p, name, nil)
	if err == nil {
		return true, nil
	}
	if isNoXattr(err) {
		return false, nil
	}
	return false, fmt.Errorf("reading %s: %w", name, err)
}

func isNoXattr(err error) bool {
	return errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)
}

// marker is the header of a whiteout or opaque marker file.
func marker(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, ModTime: time.Unix(0, 0)}
}
