package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// mountpoint is a path inside the rootfs that something is mounted on.
type mountpoint struct {
	Path string // absolute path inside the rootfs
	Dir  bool   // a directory, else a regular file
}

// openInRoot opens rel beneath root, resolving every symlink and ".." as if
// root were "/", so that a hostile rootfs cannot point a mount outside itself.
func openInRoot(root *os.File, rel string, flags int) (*os.File, error) {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(int(root.Fd()), rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: "/" + strings.TrimPrefix(rel, "."), Err: err}
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// ensureMountpoints creates the missing mountpoints (and their missing
// parents) and returns every path it created, parents first.
func ensureMountpoints(root *os.File, mps []mountpoint) ([]string, error) {
	var created []string
	for _, mp := range mps {
		if err := ensurePath(root, mp, &created); err != nil {
			return created, fmt.Errorf("creating mountpoint %s in rootfs: %w", mp.Path, err)
		}
	}
	return created, nil
}

// maxLinkDepth bounds the dangling symlinks followed while creating one mountpoint.
const maxLinkDepth = 40

// ensurePath creates the missing components of mp.Path beneath root. A
// component that is a dangling symlink (such as an /etc/resolv.conf pointing
// into /run) has its target created instead, resolved inside root.
func ensurePath(root *os.File, mp mountpoint, created *[]string) error {
	return ensurePathDepth(root, mp, created, 0)
}

func ensurePathDepth(root *os.File, mp mountpoint, created *[]string, depth int) error {
	if depth > maxLinkDepth {
		return fmt.Errorf("%s: too many levels of symbolic links", mp.Path)
	}
	parts := strings.Split(strings.Trim(path.Clean("/"+mp.Path), "/"), "/")
	for i := range parts {
		p := "/" + strings.Join(parts[:i+1], "/")
		f, err := openInRoot(root, p, unix.O_PATH)
		if err == nil {
			f.Close()
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
		last := i == len(parts)-1
		target, err := createIn(root, path.Dir(p), parts[i], last && !mp.Dir)
		switch {
		case err != nil:
			return err
		case target != "":
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			if err := ensurePathDepth(root, mountpoint{target, !last || mp.Dir}, created, depth+1); err != nil {
				return err
			}
		default:
			*created = append(*created, p)
		}
	}
	return nil
}

// createIn creates name in the directory dir of root: a directory, or an
// empty file when file is set. When name turns out to be a dangling symlink
// it creates nothing and returns the link's target.
func createIn(root *os.File, dir, name string, file bool) (linkTarget string, err error) {
	parent, err := openInRoot(root, dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return "", err
	}
	defer parent.Close()
	pfd := int(parent.Fd())
	if file {
		var fd int
		fd, err = unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	} else {
		err = unix.Mkdirat(pfd, name, 0o755)
	}
	if errors.Is(err, unix.EEXIST) {
		buf := make([]byte, unix.PathMax)
		n, lerr := unix.Readlinkat(pfd, name, buf)
		if lerr != nil {
			return "", fmt.Errorf("creating %s/%s: %w", dir, name, err)
		}
		return string(buf[:n]), nil
	}
	if err != nil {
		return "", fmt.Errorf("creating %s/%s: %w", dir, name, err)
	}
	return "", nil
}

// removeCreated removes the paths ensureMountpoints created, children first,
// as long as they are still empty: directories without entries and files
// without content. Anything the RUN put there stays.
func removeCreated(root *os.File, created []string) error {
	var errs []error
	for i := len(created) - 1; i >= 0; i-- {
		p := created[i]
		parent, err := openInRoot(root, path.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				errs = append(errs, err)
			}
			continue
		}
		name := path.Base(p)
		var st unix.Stat_t
		err = unix.Fstatat(int(parent.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err != nil:
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			err = unix.Unlinkat(int(parent.Fd()), name, unix.AT_REMOVEDIR)
			if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
				err = nil
			}
		case st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0:
			err = unix.Unlinkat(int(parent.Fd()), name, 0)
		}
		parent.Close()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing mountpoint %s from rootfs: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
