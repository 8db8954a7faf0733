package snapshot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

type inode struct{ dev, ino uint64 }

// copier copies entries with their type, content, owner, mode (setuid bits included), xattrs
// and times, keeping files that share an inode in the source sharing one in the copy.
type copier struct {
	links map[inode]string // source inode -> its first copy
}

func newCopier() *copier { return &copier{links: make(map[inode]string)} }

// copyTree copies src (lstat st) to dst, recursively for a directory.
func (c *copier) copyTree(src, dst string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return c.copyEntry(src, dst, st)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	names, err := readNames(src)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		var cst unix.Stat_t
		p := filepath.Join(src, n)
		if err := unix.Lstat(p, &cst); err != nil {
			return fmt.Errorf("inspecting %s: %w", p, err)
		}
		if err := c.copyTree(p, filepath.Join(dst, n), &cst); err != nil {
			return err
		}
	}
	return copyMeta(src, dst, st)
}

// copyEntry copies one non-directory.
func (c *copier) copyEntry(src, dst string, st *unix.Stat_t) error {
	if st.Nlink > 1 {
		key := inode{dev: st.Dev, ino: st.Ino}
		if first, ok := c.links[key]; ok {
			if err := os.Link(first, dst); err != nil {
				return fmt.Errorf("linking %s to %s: %w", dst, first, err)
			}
			return nil
		}
		c.links[key] = dst
	}
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		err = copyFile(src, dst)
	case unix.S_IFLNK:
		var target string
		if target, err = os.Readlink(src); err == nil {
			err = os.Symlink(target, dst)
		}
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
		err = unix.Mknod(dst, st.Mode&unix.S_IFMT|0o600, int(st.Rdev))
	default:
		return nil // sockets are not copied
	}
	if err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return copyMeta(src, dst, st)
}

func copyFile(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in) // copy_file_range where the filesystem offers it
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyMeta gives dst the owner, xattrs, mode and times of src (lstat st), in that order:
// chown clears setuid bits and times come last.
func copyMeta(src, dst string, st *unix.Stat_t) error {
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("setting owner %d:%d of %s: %w", st.Uid, st.Gid, dst, err)
	}
	xattrs, err := readXattrs(src)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(xattrs) {
		if err := unix.Lsetxattr(dst, name, []byte(xattrs[name]), 0); err != nil {
			return fmt.Errorf("setting xattr %s of %s: %w", name, dst, err)
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("setting mode of %s: %w", dst, err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", dst, err)
	}
	return nil
}

// readXattrs returns the xattrs of p, without overlayfs's own.
func readXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", p, err)
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", p, err)
	}
	out := make(map[string]string)
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name == "" || strings.HasPrefix(name, "user.overlay.") || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		vsize, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, p, err)
		}
		v := make([]byte, vsize)
		if vsize, err = unix.Lgetxattr(p, name, v); err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, p, err)
		}
		out[name] = string(v[:vsize])
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
