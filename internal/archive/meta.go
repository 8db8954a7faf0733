package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const paxXattrPrefix = "SCHILY.xattr."

// fdFile wraps a file descriptor this package opened.
func fdFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }

// isOverlayXattr reports whether name is overlayfs's own metadata, which never travels in a
// layer tar: it would change how a directory stacks instead of what it holds.
func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, "user.overlay.") || strings.HasPrefix(name, "trusted.overlay.")
}

// meta applies owner, xattrs, mode and (when setTimes) times of hdr to base in pfd, in that
// order: chown clears setuid/setgid bits, so the mode comes after it.
func (x *extractor) meta(pfd int, base string, hdr *tar.Header, setTimes bool) error {
	if err := x.chown(pfd, base, hdr); err != nil {
		return err
	}
	if err := x.xattrs(pfd, base, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		mode := uint32(hdr.Mode & 0o7777)
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("setting mode %#o: %w", mode, err)
		}
	}
	if !setTimes {
		return nil
	}
	return setTimesAt(pfd, base, hdr)
}

func (x *extractor) chown(pfd int, base string, hdr *tar.Header) error {
	uid, gid := hdr.Uid, hdr.Gid
	if o := x.opts.Owner; o != nil {
		uid, gid = o[0], o[1]
	}
	err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		return nil
	}
	if x.opts.SquashOwners && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) {
		// Where even 0:0 cannot be set, the entry keeps the caller's ids: in a user
		// namespace with a single id mapped, that is 0:0 already.
		err := unix.Fchownat(pfd, base, 0, 0, unix.AT_SYMLINK_NOFOLLOW)
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
func (x *extractor) xattrs(pfd int, base string, hdr *tar.Header) error {
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
	p := fdPath(pfd, base)
	if base == "." {
		p = fdPath(pfd, "")
	}
	for _, name := range names {
		if isOverlayXattr(name) {
			x.warnf("skipping overlay xattr %s on %q", name, hdr.Name)
			continue
		}
		value := []byte(hdr.PAXRecords[paxXattrPrefix+name])
		err := unix.Lsetxattr(p, name, value, 0)
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

// setTimesAt sets atime (mtime when the header has none) and mtime of base without following it.
func setTimesAt(pfd int, base string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times: %w", err)
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
			if err := setTimesAt(x.root.fd, ".", hdr); err != nil {
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
		err = setTimesAt(pfd, base, hdr)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%q: %w", rel, err)
		}
	}
	return nil
}
