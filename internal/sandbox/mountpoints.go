package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
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

// stubs are the mountpoints a sandbox created in a rootfs, and the times of the
// directories it created them in, so that removing them leaves those
// directories as they were: an overlay snapshot then sees them unchanged and
// keeps them out of the layer.
type stubs struct {
	created []string          // paths created, parents first
	parents map[string]*times // directories a path was created in
}

// times are a directory's atime and mtime before the sandbox created anything
// in it (before), and once it had (after).
type times struct{ before, after [2]unix.Timespec }

// ensureMountpoints creates the missing mountpoints (and their missing
// parents) and returns what it created.
func ensureMountpoints(root *os.File, mps []mountpoint) (*stubs, error) {
	s := &stubs{parents: map[string]*times{}}
	for _, mp := range mps {
		if err := ensurePath(root, mp, s); err != nil {
			return s, fmt.Errorf("creating mountpoint %s in rootfs: %w", mp.Path, err)
		}
	}
	for dir, t := range s.parents {
		if ts, err := dirTimes(root, dir); err == nil {
			t.after = ts
		}
	}
	return s, nil
}

// dirTimes returns the atime and mtime of dir inside root.
func dirTimes(root *os.File, dir string) ([2]unix.Timespec, error) {
	var st unix.Stat_t
	f, err := openInRoot(root, dir, unix.O_PATH)
	if err != nil {
		return [2]unix.Timespec{}, err
	}
	defer f.Close()
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return [2]unix.Timespec{}, err
	}
	return [2]unix.Timespec{st.Atim, st.Mtim}, nil
}

// noteParent records dir's times before the first stub is created in it.
func (s *stubs) noteParent(root *os.File, dir string) {
	if _, ok := s.parents[dir]; ok || dir == "/" {
		return
	}
	if ts, err := dirTimes(root, dir); err == nil {
		s.parents[dir] = &times{before: ts}
	}
}

// restoreParents puts back the times of the directories stubs were created in,
// for those whose mtime the RUN did not change (unchanged lists them, read
// before the stubs were removed).
func restoreParents(root *os.File, unchanged []string, s *stubs) error {
	var errs []error
	for _, dir := range unchanged {
		parent, err := openInRoot(root, path.Dir(dir), unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		ts := s.parents[dir].before
		// A directory that was itself a stub is gone by now: nothing to restore.
		if err := unix.UtimesNanoAt(int(parent.Fd()), path.Base(dir), ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("restoring the times of %s: %w", dir, err))
		}
		parent.Close()
	}
	return errors.Join(errs...)
}

// maxLinkDepth bounds the dangling symlinks followed while creating one mountpoint.
const maxLinkDepth = 40

// ensurePath creates the missing components of mp.Path beneath root. A
// component that is a dangling symlink (such as an /etc/resolv.conf pointing
// into /run) has its target created instead, resolved inside root.
func ensurePath(root *os.File, mp mountpoint, s *stubs) error {
	return ensurePathDepth(root, mp, s, 0)
}

func ensurePathDepth(root *os.File, mp mountpoint, s *stubs, depth int) error {
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
		s.noteParent(root, path.Dir(p))
		target, err := createIn(root, path.Dir(p), parts[i], last && !mp.Dir)
		switch {
		case err != nil:
			return err
		case target != "":
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			if err := ensurePathDepth(root, mountpoint{target, !last || mp.Dir}, s, depth+1); err != nil {
				return err
			}
		default:
			s.created = append(s.created, p)
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
// without content. Anything the RUN put there stays. Directories that held
// stubs get their times back when the RUN left them alone.
func removeCreated(root *os.File, s *stubs) error {
	if s == nil {
		return nil
	}
	var unchanged []string
	for dir, t := range s.parents {
		if ts, err := dirTimes(root, dir); err == nil && ts[1] == t.after[1] {
			unchanged = append(unchanged, dir)
		}
	}
	sort.Slice(unchanged, func(i, j int) bool { return len(unchanged[i]) > len(unchanged[j]) })
	created := s.created
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
	if len(errs) == 0 {
		errs = append(errs, restoreParents(root, unchanged, s))
	}
	return errors.Join(errs...)
}
