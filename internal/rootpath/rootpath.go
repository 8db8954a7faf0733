// Package rootpath resolves paths inside a root directory the way a process chrooted into that
// directory would see them: symlinks, `..` and absolute link targets can never lead outside the
// root. The executor uses it for COPY destinations inside a rootfs and for sources inside a build
// context or another stage's rootfs.
package rootpath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// maxLinks bounds symlink resolution, as the kernel's ELOOP limit does.
const maxLinks = 255

// Resolve returns the host path of p (absolute or relative to root) inside root, with every
// symlink on the way resolved inside root. The last component's symlink is followed only when
// followLast is set. Components that do not exist are kept as they are, so the result can name
// a path to create.
func Resolve(root, p string, followLast bool) (string, error) {
	root = filepath.Clean(root)
	var resolved string // relative to root, cleaned, never starting with ".."
	rest := strings.Split(filepath.ToSlash(p), "/")
	links := 0
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = parent(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		if len(rest) == 0 && !followLast {
			resolved = next
			break
		}
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				resolved = next
				continue
			}
			return "", fmt.Errorf("resolving %s in %s: %w", p, root, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("resolving %s in %s: too many levels of symbolic links", p, root)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("resolving %s in %s: %w", p, root, err)
		}
		if filepath.IsAbs(target) {
			resolved = ""
		}
		rest = append(strings.Split(filepath.ToSlash(target), "/"), rest...)
	}
	return filepath.Join(root, resolved), nil
}

func parent(rel string) string {
	if rel == "" {
		return ""
	}
	d := filepath.Dir(rel)
	if d == "." {
		return ""
	}
	return d
}

// Within reports whether host path p is root or lies below it (lexically).
func Within(root, p string) bool {
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
