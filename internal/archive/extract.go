// Package archive reads and writes OCI layer tars: Extract unpacks a layer into a directory in
// overlay format without ever touching anything outside it, WriteDiff turns an overlay-format
// directory into a deterministic layer tar, and NewBlobWriter compresses and hashes a layer as
// it streams. The overlay format and the layer tar rules are pinned in docs/contracts.md.
package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// OpaqueXattr marks an opaque directory in an overlay-format directory (kiln mounts
	// overlayfs with userxattr).
	OpaqueXattr = "user.overlay.opaque"
)

// ExtractOptions controls Extract.
type ExtractOptions struct {
	// SquashOwners makes files whose owner cannot be set (EINVAL/EPERM from lchown in a
	// user namespace with a single id mapped) owned by 0:0 instead of failing.
	SquashOwners bool
	// Owner, when set, owns every extracted entry ({uid, gid}) whatever the tar says, as
	// ADD --chown does for a local archive.
	Owner *[2]int
	// Warnings, when set, receives one line per entry that was skipped or only partly applied
	// (device nodes, unknown entry types, xattrs the kernel refused).
	Warnings io.Writer
	// LiteralWhiteouts writes `.wh.` entries as the plain files they are instead of overlay
	// whiteouts and opaque markers: for unpacking a user's archive into a root filesystem
	// (Dockerfile ADD), where a whiteout would delete what lies below.
	LiteralWhiteouts bool
}

// Extract applies the uncompressed OCI layer tar read from r into dir (which exists), in the
// overlay format of docs/contracts.md: `.wh.NAME` becomes a 0/0 char device NAME, `.wh..wh..opq`
// sets user.overlay.opaque=y on its directory. No entry creates or modifies anything outside dir:
// names are cleaned under dir, parents are resolved with openat2(RESOLVE_IN_ROOT) so symlinks in
// dir resolve as in a chroot, the last element is never followed, and hard links must point
// inside dir. Device nodes other than whiteouts and unknown entry types are skipped with a
// warning. Type, mode (with setuid/setgid/sticky), owner, xattrs, mtimes (directories' after
// their children) and symlink targets are preserved.
func Extract(ctx context.Context, r io.Reader, dir string, opts ExtractOptions) error {
	rt, err := openRoot(dir)
	if err != nil {
		return err
	}
	defer rt.Close()
	x := &extractor{root: rt, opts: opts}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("extracting layer into %s: %w", dir, err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer tar for %s: %w", dir, err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("extracting %q into %s: %w", hdr.Name, dir, err)
		}
	}
	if err := x.finishDirs(); err != nil {
		return fmt.Errorf("setting directory times in %s: %w", dir, err)
	}
	x.reportDevices()
	return nil
}

// reportDevices warns once about the device nodes skipped: without privileges they cannot be
// made, and RUN steps get a /dev of their own anyway.
func (x *extractor) reportDevices() {
	if len(x.devices) == 0 {
		return
	}
	shown := x.devices
	if len(shown) > 4 {
		shown = shown[:4]
	}
	more := ""
	if n := len(x.devices) - len(shown); n > 0 {
		more = fmt.Sprintf(" and %d more", n)
	}
	x.warnf("skipped %d device nodes (%s%s): they cannot be made without privileges; RUN steps get their own /dev",
		len(x.devices), strings.Join(shown, ", "), more)
}

// extractor holds the state of one Extract call.
type extractor struct {
	root *root
	opts ExtractOptions
	dirs []*tar.Header // directories whose times are set once all entries are written
	// devices are the device nodes skipped, reported in one warning at the end.
	devices []string
	buf     []byte // file content on its way to disk
}

func (x *extractor) warnf(format string, args ...any) {
	if x.opts.Warnings != nil {
		fmt.Fprintf(x.opts.Warnings, "warning: "+format+"\n", args...)
	}
}

// entry applies one tar entry.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	if climbs(hdr.Name) {
		// No honest layer names a path above its root; treat it as an attack, not a typo.
		return fmt.Errorf("the entry climbs out of the layer with \"..\": refusing a hostile layer")
	}
	rel := cleanRel(hdr.Name)
	parent, base := splitRel(rel)
	switch {
	case hdr.Typeflag == tar.TypeXGlobalHeader:
		return nil
	case x.opts.LiteralWhiteouts: // `.wh.` names are ordinary files
	case base == opaqueMarker:
		return x.opaque(parent)
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		x.warnf("skipping aufs metadata entry %q", hdr.Name)
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		return x.whiteout(parent, strings.TrimPrefix(base, whiteoutPrefix))
	}
	if rel == "" {
		return x.rootEntry(hdr)
	}
	pfd, err := x.root.mkdirAll(parent)
	if err != nil {
		return fmt.Errorf("creating parent directory %q: %w", parent, err)
	}
	defer unix.Close(pfd)
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(pfd, base, hdr)
	case tar.TypeReg, tar.TypeGNUSparse: // the reader turns old-style TypeRegA into TypeReg
		return x.file(pfd, base, hdr, r)
	case tar.TypeSymlink:
		return x.symlink(pfd, base, hdr)
	case tar.TypeLink:
		return x.hardlink(pfd, base, rel, hdr)
	case tar.TypeFifo:
		if err := replace(pfd, base, false); err != nil {
			return err
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return fmt.Errorf("creating fifo: %w", err)
		}
		return x.meta(at(pfd, base), hdr, true)
	case tar.TypeChar, tar.TypeBlock:
		x.devices = append(x.devices, strings.TrimPrefix(path.Clean("/"+hdr.Name), "/"))
		return nil
	default:
		x.warnf("skipping %q of unknown tar entry type %q", hdr.Name, hdr.Typeflag)
		return nil
	}
}

// opaque marks the directory rel opaque, creating it if the layer did not list it.
func (x *extractor) opaque(rel string) error {
	fd, err := x.root.mkdirAll(rel)
	if err != nil {
		return fmt.Errorf("opening opaque directory %q: %w", rel, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, OpaqueXattr, []byte("y"), 0); err != nil {
		return fmt.Errorf("setting %s on %q: %w", OpaqueXattr, rel, err)
	}
	return nil
}

// whiteout replaces name in the directory parent with an overlay whiteout.
func (x *extractor) whiteout(parent, name string) error {
	if name == "" || name == "." || name == ".." {
		x.warnf("skipping whiteout with empty name in %q", parent)
		return nil
	}
	pfd, err := x.root.mkdirAll(parent)
	if err != nil {
		return fmt.Errorf("creating parent directory %q: %w", parent, err)
	}
	defer unix.Close(pfd)
	if err := removeAllAt(pfd, name); err != nil {
		return fmt.Errorf("removing %q before its whiteout: %w", name, err)
	}
	if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("creating whiteout %q: %w", name, err)
	}
	return nil
}

// rootEntry applies an entry naming the extraction root itself ("./" or "/").
func (x *extractor) rootEntry(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		x.warnf("skipping %q: the layer root can only be a directory", hdr.Name)
		return nil
	}
	return x.dir(x.root.fd, ".", hdr)
}

// replace clears the way for a new entry base in pfd: an existing directory stays when the new
// entry is a directory too; anything else in the way is removed.
func replace(pfd int, base string, keepDir bool) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting existing entry: %w", err)
	}
	if keepDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	if err := removeAllAt(pfd, base); err != nil {
		return fmt.Errorf("removing existing entry: %w", err)
	}
	return nil
}

func (x *extractor) dir(pfd int, base string, hdr *tar.Header) error {
	if base != "." {
		if err := replace(pfd, base, true); err != nil {
			return err
		}
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("creating directory: %w", err)
		}
	}
	x.dirs = append(x.dirs, hdr)
	return x.meta(at(pfd, base), hdr, false)
}

func (x *extractor) file(pfd int, base string, hdr *tar.Header, r io.Reader) error {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, base, flags, 0o600)
	if errors.Is(err, unix.EEXIST) { // an earlier layer or entry holds the name
		if err := replace(pfd, base, false); err != nil {
			return err
		}
		fd, err = unix.Openat(pfd, base, flags, 0o600)
	}
	if err != nil {
		return fmt.Errorf("creating file: %w", err)
	}
	defer unix.Close(fd)
	if err := x.copyContent(fd, r); err != nil {
		return fmt.Errorf("writing file content: %w", err)
	}
	return x.meta(node{fd: fd}, hdr, true)
}

// copyContent writes everything r holds to the file fd through the extractor's one buffer.
func (x *extractor) copyContent(fd int, r io.Reader) error {
	if x.buf == nil {
		x.buf = make([]byte, 128<<10)
	}
	for {
		n, rerr := r.Read(x.buf)
		for b := x.buf[:n]; len(b) > 0; {
			k, err := unix.Write(fd, b)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			b = b[k:]
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (x *extractor) symlink(pfd int, base string, hdr *tar.Header) error {
	if err := replace(pfd, base, false); err != nil {
		return err
	}
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return fmt.Errorf("creating symlink to %q: %w", hdr.Linkname, err)
	}
	return x.meta(at(pfd, base), hdr, true)
}

// hardlink links base to the entry named by hdr.Linkname, which is resolved inside the root
// like any other name; linking to a path that is a symlink links the symlink itself.
func (x *extractor) hardlink(pfd int, base, rel string, hdr *tar.Header) error {
	target := cleanRel(hdr.Linkname)
	if target == rel || target == "" {
		x.warnf("skipping hard link %q to itself or to the root", hdr.Name)
		return nil
	}
	tparent, tbase := splitRel(target)
	tfd, err := x.root.openDir(tparent)
	if err != nil {
		return fmt.Errorf("opening directory of hard link target %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tfd)
	if err := replace(pfd, base, false); err != nil {
		return err
	}
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return fmt.Errorf("linking to %q: %w", hdr.Linkname, err)
	}
	return nil
}
