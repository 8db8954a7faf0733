package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/rootpath"
)

type inode struct{ dev, ino uint64 }

// copier copies sources of one CopySpec into a rootfs.
type copier struct {
	ctx    context.Context
	rootfs string
	spec   CopySpec
	// links maps a source inode with several links to the destination path written for it,
	// so hard links stay hard links.
	links map[inode]string
}

// copySource copies one source (relative to SrcRoot) as Docker does: a directory's contents go
// into Dest; a file goes to Dest, or into it when Dest is a directory.
func (c *copier) copySource(rel string) error {
	src, err := rootpath.Resolve(c.spec.SrcRoot, rel, true)
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.spec.Instruction, rel, err)
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("%s %s: %s", c.spec.Instruction, rel, notFound(c.spec))
	}
	if fi.IsDir() {
		dst, err := c.mkdirAll(c.spec.Dest)
		if err != nil {
			return err
		}
		return c.copyDirContents(src, rel, dst)
	}
	if c.spec.ExtractArchives {
		if ok, err := c.tryExtract(src); ok || err != nil {
			return err
		}
	}
	dest := c.spec.Dest
	if c.spec.DestIsDir || isDirIn(c.rootfs, dest) {
		dest = path.Join(dest, path.Base("/"+rel))
	}
	dst, err := c.prepareDest(dest)
	if err != nil {
		return err
	}
	return c.copyEntry(src, dst, fi)
}

// prepareDest creates dest's parent directories and returns dest's host path. A symlink at
// dest is followed inside the rootfs, as BuildKit does: the file it points to is written.
func (c *copier) prepareDest(dest string) (string, error) {
	if _, err := c.mkdirAll(path.Dir(dest)); err != nil {
		return "", err
	}
	return rootpath.Resolve(c.rootfs, dest, true)
}

// MkdirAll creates dir and its missing parents inside rootfs (symlinks resolved inside it),
// mode 0755, owned by owner, and returns dir's host path. instruction names the step in errors.
// WORKDIR uses it; COPY and ADD create their destinations the same way.
func MkdirAll(rootfs, dir string, owner Owner, instruction string) (string, error) {
	c := &copier{rootfs: rootfs, spec: CopySpec{Instruction: instruction, Chown: &owner}}
	return c.mkdirAll(dir)
}

// mkdirAll creates dir and its missing parents inside the rootfs, owned by Chown (or 0:0), mode
// 0755, and returns its host path.
func (c *copier) mkdirAll(dir string) (string, error) {
	host, err := rootpath.Resolve(c.rootfs, dir, true)
	if err != nil {
		return "", fmt.Errorf("%s: resolving destination %s: %w", c.spec.Instruction, dir, err)
	}
	var missing []string
	for p := host; rootpath.Within(c.rootfs, p) && p != filepath.Clean(c.rootfs); p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err == nil {
			if !fi.IsDir() {
				return "", fmt.Errorf("%s: destination %s: %s is not a directory", c.spec.Instruction, dir, strings.TrimPrefix(p, c.rootfs))
			}
			break
		}
		missing = append(missing, p)
	}
	owner := Owner{}
	if c.spec.Chown != nil {
		owner = *c.spec.Chown
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("%s: creating %s: %w", c.spec.Instruction, strings.TrimPrefix(missing[i], c.rootfs), err)
		}
		if err := c.lchown(missing[i], owner); err != nil {
			return "", err
		}
	}
	return host, nil
}

func (c *copier) copyDirContents(src, rel, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("%s: reading %s: %w", c.spec.Instruction, rel, err)
	}
	for _, e := range entries {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		childRel := path.Join(rel, e.Name())
		excluded, walkInto := c.excluded(childRel, e.IsDir())
		if excluded && !walkInto {
			continue
		}
		childSrc := filepath.Join(src, e.Name())
		childDst := filepath.Join(dst, e.Name())
		fi, err := os.Lstat(childSrc)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", c.spec.Instruction, childRel, err)
		}
		if excluded {
			// An excluded directory with `!` exceptions below it: look inside, create it only
			// if something in it is copied.
			if err := c.copyDirContentsLazy(childSrc, childRel, childDst, fi); err != nil {
				return err
			}
			continue
		}
		if err := c.copyEntry(childSrc, childDst, fi); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := c.copyDirContents(childSrc, childRel, childDst); err != nil {
				return err
			}
			if err := c.finishDir(childDst, fi); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *copier) copyDirContentsLazy(src, rel, dst string, fi fs.FileInfo) error {
	if err := c.copyEntry(src, dst, fi); err != nil {
		return err
	}
	if err := c.copyDirContents(src, rel, dst); err != nil {
		return err
	}
	if entries, err := os.ReadDir(dst); err == nil && len(entries) == 0 {
		return os.Remove(dst)
	}
	return c.finishDir(dst, fi)
}

// excluded applies .dockerignore to a context path; walkInto is set for an excluded directory
// that may hold re-included (`!`) paths.
func (c *copier) excluded(rel string, isDir bool) (excluded, walkInto bool) {
	return Excluded(c.spec, rel, isDir)
}

// Excluded reports whether .dockerignore keeps the path rel (relative to the context, as the
// copy walks it: a source path joined with the path below it) out of spec's copy; walkInto is
// set for an excluded directory that may hold re-included (`!`) paths.
func Excluded(spec CopySpec, rel string, isDir bool) (excluded, walkInto bool) {
	if !spec.FromContext || spec.Excludes == nil {
		return false, false
	}
	ok, err := spec.Excludes.MatchesOrParentMatches(rel)
	if err != nil || !ok {
		return false, false
	}
	return true, isDir && spec.Excludes.Exclusions()
}

// copyEntry creates one filesystem object at dst like src (a directory is created empty; its
// metadata is finished by finishDir after its children).
func (c *copier) copyEntry(src, dst string, fi fs.FileInfo) error {
	if existing, err := os.Lstat(dst); err == nil {
		if existing.IsDir() && fi.IsDir() {
			return nil // merge into the existing directory, keeping its metadata
		}
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("%s: replacing %s: %w", c.spec.Instruction, c.inRoot(dst), err)
		}
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().IsRegular() && st.Nlink > 1 {
		key := inode{uint64(st.Dev), st.Ino}
		if first, ok := c.links[key]; ok {
			if err := os.Link(first, dst); err != nil {
				return fmt.Errorf("%s: linking %s: %w", c.spec.Instruction, c.inRoot(dst), err)
			}
			return nil
		}
		c.links[key] = dst
	}
	var err error
	switch {
	case fi.Mode().IsRegular():
		err = copyFileData(src, dst)
	case fi.IsDir():
		err = os.Mkdir(dst, 0o700)
	case fi.Mode()&fs.ModeSymlink != 0:
		var target string
		if target, err = os.Readlink(src); err == nil {
			err = os.Symlink(target, dst)
		}
	case fi.Mode()&fs.ModeNamedPipe != 0:
		err = unix.Mkfifo(dst, 0o600)
	default:
		return fmt.Errorf("%s: %s: cannot copy %s (device nodes and sockets are not copied)", c.spec.Instruction, c.inRoot(dst), fi.Mode().Type())
	}
	if err != nil {
		return fmt.Errorf("%s: writing %s: %w", c.spec.Instruction, c.inRoot(dst), err)
	}
	if fi.IsDir() {
		return nil
	}
	return c.applyMetadata(src, dst, fi)
}

// finishDir sets a copied directory's owner, mode and mtime once its children are in place.
func (c *copier) finishDir(dst string, fi fs.FileInfo) error {
	return c.applyMetadata("", dst, fi)
}

func (c *copier) applyMetadata(src, dst string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	owner := Owner{UID: int(st.Uid), GID: int(st.Gid)}
	if c.spec.FromContext {
		owner = Owner{}
	}
	if c.spec.Chown != nil {
		owner = *c.spec.Chown
	}
	if err := c.lchown(dst, owner); err != nil {
		return err
	}
	isLink := fi.Mode()&fs.ModeSymlink != 0
	if !isLink {
		mode := fi.Mode()
		if c.spec.Chmod != nil {
			mode = mode&^fs.ModePerm | *c.spec.Chmod&fs.ModePerm
		}
		if err := os.Chmod(dst, toChmod(mode)); err != nil {
			return fmt.Errorf("%s: chmod %s: %w", c.spec.Instruction, c.inRoot(dst), err)
		}
		if src != "" && !c.spec.FromContext {
			if err := copyXattrs(src, dst); err != nil {
				return fmt.Errorf("%s: copying xattrs of %s: %w", c.spec.Instruction, c.inRoot(dst), err)
			}
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(fi.ModTime().UnixNano()), unix.NsecToTimespec(fi.ModTime().UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: setting times of %s: %w", c.spec.Instruction, c.inRoot(dst), err)
	}
	return nil
}

func (c *copier) lchown(p string, o Owner) error {
	if err := os.Lchown(p, o.UID, o.GID); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%s: chown %s to %d:%d: that id is not mapped in kiln's user namespace (only a single id is mapped; add /etc/subuid and /etc/subgid ranges for this user, see `kiln doctor`)", c.spec.Instruction, c.inRoot(p), o.UID, o.GID)
		}
		return fmt.Errorf("%s: chown %s: %w", c.spec.Instruction, c.inRoot(p), err)
	}
	return nil
}

func (c *copier) inRoot(p string) string {
	if rel, err := filepath.Rel(c.rootfs, p); err == nil && !strings.HasPrefix(rel, "..") {
		return "/" + rel
	}
	return p
}

// writeContent writes an inline (heredoc) file.
func (c *copier) writeContent(content Content) error {
	dest := c.spec.Dest
	if c.spec.DestIsDir || isDirIn(c.rootfs, dest) {
		dest = path.Join(dest, content.Name)
	}
	dst, err := c.prepareDest(dest)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("%s: replacing %s: %w", c.spec.Instruction, dest, err)
	}
	mode := fs.FileMode(0o644)
	if c.spec.Chmod != nil {
		mode = *c.spec.Chmod
	}
	if err := os.WriteFile(dst, []byte(content.Data), 0o600); err != nil {
		return fmt.Errorf("%s: writing %s: %w", c.spec.Instruction, dest, err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		return fmt.Errorf("%s: chmod %s: %w", c.spec.Instruction, dest, err)
	}
	owner := Owner{}
	if c.spec.Chown != nil {
		owner = *c.spec.Chown
	}
	return c.lchown(dst, owner)
}

func isDirIn(rootfs, p string) bool {
	fi, err := statIn(rootfs, p)
	return err == nil && fi.IsDir()
}

func copyFileData(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// toChmod converts Go's mode bits to what os.Chmod expects, keeping setuid, setgid and sticky.
func toChmod(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func copyXattrs(src, dst string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		return nil
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(src, buf)
	if err != nil {
		return nil
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "user.overlay.") || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		vsize, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, vsize)
		if vsize, err = unix.Lgetxattr(src, name, val); err != nil {
			continue
		}
		if err := unix.Lsetxattr(dst, name, val[:vsize], 0); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return nil
}
