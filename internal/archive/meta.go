package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const paxXattrPrefix = "SCHILY.xattr."

// isOverlayXattr reports whether name is overlayfs's own metadata, which never travels in a
// layer tar: it would change how a directory stacks instead of what it holds.
func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, "user.overlay.") || strings.HasPrefix(name, "trusted.overlay.")
}

// node is an entry being extracted: the name base in the directory pfd, or, when fd is not
// -1, the file open as fd (a regular file just written), which saves a path lookup per call.
type node struct {
	pfd  int
	base string
	fd   int
}

// at is the node of base in pfd.
func at(pfd int, base string) node { return node{pfd: pfd, base: base, fd: -1} }

func (n node) chown(uid, gid int) error {
	if n.fd != -1 {
		return unix.Fchown(n.fd, uid, gid)
	}
	return unix.Fchownat(n.pfd, n.base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

func (n node) setxattr(name string, value []byte) error {
	if n.fd != -1 {
		return unix.Fsetxattr(n.fd, name, value, 0)
	}
	p := fdPath(n.pfd, n.base)
	if n.base == "." {
		p = fdPath(n.pfd, "")
	}
	return unix.Lsetxattr(p, name, value, 0)
}

func (n node) chmod(mode uint32) error {
	if n.fd != -1 {
		return unix.Fchmod(n.fd, mode)
	}
	return unix.Fchmodat(n.pfd, n.base, mode, 0)
}

// setTimes sets atime (mtime when the header has none) and mtime without following a symlink.
func (n node) setTimes(hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := [2]unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
	var err error
	if n.fd != -1 {
		err = futimens(n.fd, &ts)
	} else {
		err = unix.UtimesNanoAt(n.pfd, n.base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fmt.Errorf("setting times: %w", err)
	}
	return nil
}

// meta applies owner, xattrs, mode and (when setTimes) times of hdr to n, in that order:
// chown clears setuid/setgid bits, so the mode comes after it.
func (x *extractor) meta(n node, hdr *tar.Header, setTimes bool) error {
	if err := x.chown(n, hdr); err != nil {
		return err
	}
	if err := x.xattrs(n, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		mode := uint32(hdr.Mode & 0o7777)
		if err := n.chmod(mode); err != nil {
			return fmt.Errorf("setting mode %#o: %w", mode, err)
		}
	}
	if !setTimes {
		return nil
	}
	return n.setTimes(hdr)
}

func (x *extractor) chown(n node, hdr *tar.Header) error {
	uid, gid := hdr.Uid, hdr.Gid
	if o := x.opts.Owner; o != nil {
		uid, gid = o[0], o[1]
	}
	err := n.chown(uid, gid)
	if err == nil {
		return nil
	}
	if x.opts.SquashOwners && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) {
		// Where even 0:0 cannot be set, the entry keeps the caller's ids: in a user
		// namespace with a single id mapped, that is 0:0 already.
		err := n.chown(0, 0)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("setting owner 0:0 in place of %d:%d: %w", uid, gid, err)
		}
		return nil
	}
	return fmt.Errorf("setting owner %d:%d: %w", uid, gid, err)
}

// xattrs sets the PAX SCHILY.xattr.* records of hdr, in sorted order. Overlay metadata is
// skipped; xattrs the kernel refuses here (EPERM, ENOTSUP: trusted.* in a user namespace,
// user.* on a symlink) are skipped with a warning.
func (x *extractor) xattrs(n node, hdr *tar.Header) error {
	var names []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattrPrefix) {
			names = append(names, strings.TrimPrefix(k, paxXattrPrefix))
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	for _, name := range names {
		if isOverlayXattr(name) {
			x.warnf("skipping overlay xattr %s on %q", name, hdr.Name)
			continue
		}
		value := []byte(hdr.PAXRecords[paxXattrPrefix+name])
		err := n.setxattr(name, value)
		switch {
		case err == nil:
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EACCES):
			x.warnf("skipping xattr %s on %q: %v", name, hdr.Name, err)
		default:
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	return nil
}

// futimens sets the times of the file open as fd: utimensat with a NULL path, which
// x/sys/unix does not offer (its Futimes goes through /proc and drops nanoseconds).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// finishDirs sets the times of every directory the layer listed, now that nothing more will
// be written into them. A directory replaced by a later entry is not followed if it became a
// symlink.
func (x *extractor) finishDirs() error {
	for i := len(x.dirs) - 1; i >= 0; i-- {
		hdr := x.dirs[i]
		rel := cleanRel(hdr.Name)
		if rel == "" {
			if err := at(x.root.fd, ".").setTimes(hdr); err != nil {
				return err
			}
			continue
		}
		parent, base := splitRel(rel)
		pfd, err := x.root.openDir(parent)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("opening %q: %w", parent, err)
		}
		err = at(pfd, base).setTimes(hdr)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%q: %w", rel, err)
		}
	}
	return nil
}
