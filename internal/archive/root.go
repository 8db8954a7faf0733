package archive

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// root is a directory that every path is resolved inside, as if it were the root of a chroot:
// "..", absolute paths and symlinks (absolute or relative) never lead out of it.
type root struct {
	fd   int
	name string // the directory's path, for error messages only
}

func openRoot(dir string) (*root, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening extraction root %s: %w", dir, err)
	}
	return &root{fd: fd, name: dir}, nil
}

func (r *root) Close() error { return unix.Close(r.fd) }

// cleanRel turns any tar entry name into a clean path relative to the root: "" is the root
// itself; "..", leading "/" and "." elements are resolved lexically and can never climb above it.
func cleanRel(name string) string {
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/")
}

// climbs reports whether a tar entry name, read as a relative path, goes above its root
// ("../x", "a/../../x"). Leading "/" is not climbing: such names are taken relative to the root,
// as GNU tar does.
func climbs(name string) bool {
	p := path.Clean(strings.TrimLeft(name, "/"))
	return p == ".." || strings.HasPrefix(p, "../")
}

// openDir opens the directory rel (clean, relative) inside the root, following symlinks only
// within the root and never through /proc magic links.
func (r *root) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(r.fd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// mkdirAll opens the directory rel, creating it and any missing parents (mode 0755, owned by
// the caller) inside the root first. A dangling symlink in the way has its target created, as
// resolved inside the root; another non-directory in the way is an error.
func (r *root) mkdirAll(rel string) (int, error) {
	return r.mkdirAllDepth(rel, 0)
}

// maxLinkDepth bounds symlink chains followed while creating parents, as the kernel's ELOOP does.
const maxLinkDepth = 40

func (r *root) mkdirAllDepth(rel string, depth int) (int, error) {
	fd, err := r.openDir(rel)
	if err == nil || !errors.Is(err, unix.ENOENT) || rel == "" {
		return fd, err
	}
	if depth > maxLinkDepth {
		return -1, unix.ELOOP
	}
	parent, base := splitRel(rel)
	pfd, err := r.mkdirAllDepth(parent, depth+1)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	err = unix.Mkdirat(pfd, base, 0o755)
	if err == nil {
		return r.openDir(rel)
	}
	if !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	// Something is there but rel did not resolve: a dangling symlink (or a race with
	// ourselves, which does not happen). Create what it points to, inside the root.
	target, lerr := readlinkat(pfd, base)
	if lerr != nil {
		return r.openDir(rel)
	}
	if !strings.HasPrefix(target, "/") {
		target = parent + "/" + target
	}
	tfd, err := r.mkdirAllDepth(cleanRel(target), depth+1)
	if err != nil {
		return -1, err
	}
	unix.Close(tfd)
	return r.openDir(rel)
}

// readlinkat reads the target of the symlink base in the directory dirfd.
func readlinkat(dirfd int, base string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, base, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// splitRel splits a clean relative path into its parent ("" for the root) and last element.
func splitRel(rel string) (parent, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// fdPath names the entry base of the directory open as dirfd, for the l* family of calls
// (lsetxattr, lgetxattr) that have no *at form: the directory is reached through its fd and
// the last element, which holds no slash, is not followed.
func fdPath(dirfd int, base string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + base
}

// removeAllAt removes name in the directory dirfd and, if it is a directory, all it holds,
// without following any symlink.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeAllAt(fd, n); err != nil {
			return err
		}
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}
