package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/archive"
)

// lowerEntry is one name of the merged view of a stack of overlay-format directories, as
// overlayfs would show it: the entry of the topmost layer that has the name and, for a
// directory, every layer's directory that merges into it (topmost first, down to the first
// opaque one, or to a layer where the name is not a directory).
type lowerEntry struct {
	path string // the entry in its topmost layer
	st   unix.Stat_t
	dirs []string
}

func (e *lowerEntry) isDir() bool { return e.st.Mode&unix.S_IFMT == unix.S_IFDIR }

// mergedChildren lists the merged children of the directory made of dirs (topmost first).
// Names deleted by a whiteout are absent.
func mergedChildren(dirs []string) (map[string]*lowerEntry, error) {
	out := make(map[string]*lowerEntry)
	closed := make(map[string]bool) // names whose lower layers no longer merge in
	for _, d := range dirs {
		names, err := readNames(d)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if closed[n] {
				continue
			}
			p := filepath.Join(d, n)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return nil, fmt.Errorf("inspecting lower %s: %w", p, err)
			}
			e, seen := out[n]
			isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
			switch {
			case !seen && isWhiteout(&st):
				closed[n] = true
			case !seen:
				e = &lowerEntry{path: p, st: st}
				out[n] = e
				closed[n] = !isDir
			case !isDir:
				closed[n] = true
				continue
			}
			if isDir && !closed[n] {
				e.dirs = append(e.dirs, p)
				opaque, err := isOpaque(p)
				if err != nil {
					return nil, err
				}
				closed[n] = opaque
			}
		}
	}
	return out, nil
}

// readNames lists a directory; a missing one is empty.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return names, nil
}

// isWhiteout reports whether st is an overlay whiteout (a 0/0 character device).
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// isOpaque reports whether the directory p is marked opaque.
func isOpaque(p string) (bool, error) {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, archive.OpaqueXattr, buf)
	switch {
	case err == nil:
		return string(buf[:n]) == "y", nil
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.ERANGE):
		return false, nil
	default:
		return false, fmt.Errorf("reading %s of %s: %w", archive.OpaqueXattr, p, err)
	}
}
