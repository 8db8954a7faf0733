package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/archive"
)

// pruneUnchangedDirs removes from an overlay upper dir the directories that overlayfs copied up
// but that differ in nothing from the merged lower directory: nothing left inside them, not
// opaque, and the same mode, owner, mtime and xattrs. Creating and removing a file in a
// directory (as the sandbox does for mountpoints such as /etc/hosts, restoring the directory's
// times afterwards) copies it up; without this pass every RUN layer would carry such
// directories. It also drops opaque markers on directories that hide nothing (no directory
// below them). lowers are bottom first, as Prepare takes them.
func pruneUnchangedDirs(ctx context.Context, upper string, lowers []string) error {
	top := slices.Clone(lowers)
	slices.Reverse(top)
	_, err := pruneDir(ctx, upper, top)
	return err
}

// pruneDir prunes below dir, whose lower counterparts are lowerDirs (topmost first), and reports
// whether dir is left empty.
func pruneDir(ctx context.Context, dir string, lowerDirs []string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	names, err := readNames(dir)
	if err != nil {
		return false, err
	}
	lower, err := mergedChildren(lowerDirs)
	if err != nil {
		return false, err
	}
	left := len(names)
	for _, n := range names {
		l := lower[n]
		p := filepath.Join(dir, n)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return false, fmt.Errorf("inspecting %s: %w", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		opaque, err := isOpaque(p)
		if err != nil {
			return false, err
		}
		if l == nil || !l.isDir() {
			if opaque {
				// overlayfs marks a directory opaque when it replaces a whiteout, even where
				// the lowers hold no directory to hide. The marker means nothing there; drop
				// it so the layer is the same whatever sequence of calls made the change.
				if err := unix.Lremovexattr(p, archive.OpaqueXattr); err != nil {
					return false, fmt.Errorf("dropping a needless opaque marker on %s: %w", p, err)
				}
			}
			continue
		}
		if opaque {
			continue
		}
		empty, err := pruneDir(ctx, p, l.dirs)
		if err != nil {
			return false, err
		}
		if empty && sameEntry(p, &st, l) {
			if err := os.Remove(p); err != nil {
				return false, fmt.Errorf("pruning unchanged directory %s: %w", p, err)
			}
			left--
		}
	}
	return left == 0, nil
}
