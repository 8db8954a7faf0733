package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// entry writes the header of the entry base of the directory dirfd under the tar name name
// and, for a regular file, its content, or for a directory, its opaque marker and children.
// Files and directories are opened once, and their xattrs read through that descriptor;
// other entries are reached by path without following their last element. A small file may
// have been read ahead (pre, which may be nil).
func (d *differ) entry(ctx context.Context, dirfd int, base, name, shown string, st *unix.Stat_t, pre *prefetched) error {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: d.mtime(st),
	}
	open := -1 // flags to open the entry with, when it is read through a descriptor
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		open = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
		open = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		target, err := readlinkat(dirfd, base)
		if err != nil {
			return fmt.Errorf("%s: reading symlink: %w", shown, err)
		}
		hdr.Linkname = target
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
	default:
		return nil // sockets have no tar form
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		key := inode{dev: st.Dev, ino: st.Ino}
		if first, ok := d.links[key]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return d.writeHeader(hdr)
		}
		d.links[key] = name
	}
	var xattrs map[string]string
	xt := pathXattrs(fdPath(dirfd, base))
	ahead := pre.take()
	if ahead {
		defer d.done(pre)
		if pre.err != nil {
			return fmt.Errorf("%s: %w", shown, pre.err)
		}
		xattrs = pre.xattrs
	} else {
		if open != -1 {
			fd, err := unix.Openat(dirfd, base, open, 0)
			if err != nil {
				return fmt.Errorf("%s: opening: %w", shown, err)
			}
			defer unix.Close(fd)
			xt.fd = fd
		}
		var err error
		if xattrs, err = readXattrs(xt); err != nil {
			return fmt.Errorf("%s: %w", shown, err)
		}
	}
	if len(xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(xattrs))
		for k, v := range xattrs {
			hdr.PAXRecords[paxXattrPrefix+k] = v
		}
	}
	if err := d.writeHeader(hdr); err != nil {
		return err
	}
	switch {
	case ahead:
		if _, err := d.tw.Write(pre.data); err != nil {
			return fmt.Errorf("%s: copying content: %w", shown, err)
		}
	case hdr.Typeflag == tar.TypeDir:
		return d.subdir(ctx, xt.fd, shown, name)
	case hdr.Typeflag == tar.TypeReg && hdr.Size > 0:
		if err := d.content(xt.fd, hdr); err != nil {
			return fmt.Errorf("%s: %w", shown, err)
		}
	}
	return nil
}

func (d *differ) writeHeader(hdr *tar.Header) error {
	if err := d.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing header of %s: %w", hdr.Name, err)
	}
	return nil
}

// content copies exactly hdr.Size bytes of the file open as fd through the differ's one
// buffer; a file that shrank while being written is an error rather than a corrupt layer.
// It stops at hdr.Size without reading to the end of the file, as tar does: one read per small
// file instead of two (the layers it writes are of sealed snapshots, which nothing changes).
func (d *differ) content(fd int, hdr *tar.Header) error {
	if d.buf == nil {
		d.buf = make([]byte, 128<<10)
	}
	for n := int64(0); n < hdr.Size; {
		want := min(int64(len(d.buf)), hdr.Size-n)
		if err := readExactly(fd, d.buf[:want], n, hdr.Size); err != nil {
			return err
		}
		if _, err := d.tw.Write(d.buf[:want]); err != nil {
			return fmt.Errorf("copying content: %w", err)
		}
		n += want
	}
	return nil
}

// readExactly fills buf from fd, the part of a file of size bytes that starts at offset off
// (for messages).
func readExactly(fd int, buf []byte, off, size int64) error {
	for n := 0; n < len(buf); {
		k, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading content: %w", err)
		}
		if k == 0 {
			return fmt.Errorf("copying content: size changed from %d to %d while writing", size, off+int64(n))
		}
		n += k
	}
	return nil
}

// mtime is the entry's mtime in whole seconds, clamped to SourceDateEpoch.
func (d *differ) mtime(st *unix.Stat_t) time.Time {
	t := time.Unix(st.Mtim.Sec, 0)
	if e := d.opts.SourceDateEpoch; e != nil && t.After(*e) {
		t = time.Unix(e.Unix(), 0)
	}
	return t
}

// xattrTarget names a file for xattr calls: by descriptor when fd is not -1, else by path
// without following the path's last element.
type xattrTarget struct {
	fd   int
	path string
}

// pathXattrs is the xattrTarget of the path p.
func pathXattrs(p string) xattrTarget { return xattrTarget{fd: -1, path: p} }

func (t xattrTarget) list(buf []byte) (int, error) {
	if t.fd != -1 {
		return unix.Flistxattr(t.fd, buf)
	}
	return unix.Llistxattr(t.path, buf)
}

func (t xattrTarget) get(name string, buf []byte) (int, error) {
	if t.fd != -1 {
		return unix.Fgetxattr(t.fd, name, buf)
	}
	return unix.Lgetxattr(t.path, name, buf)
}

// readXattrs lists the xattrs of t that belong in a layer: all but overlay metadata.
func readXattrs(t xattrTarget) (map[string]string, error) {
	var small [256]byte
	size, err := t.list(small[:])
	if errors.Is(err, unix.ERANGE) {
		size, err = t.list(nil)
	}
	if err != nil {
		if isNoXattr(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing xattrs: %w", err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := small[:size]
	if size > len(small) {
		buf = make([]byte, size)
		if size, err = t.list(buf); err != nil {
			return nil, fmt.Errorf("listing xattrs: %w", err)
		}
	}
	var names []string
	for start := 0; start < size; {
		end := start
		for end < size && buf[end] != 0 {
			end++
		}
		if n := string(buf[start:end]); n != "" && !isOverlayXattr(n) {
			names = append(names, n)
		}
		start = end + 1
	}
	if len(names) == 0 {
		return nil, nil
	}
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for _, n := range names {
		v, err := getXattr(t, n)
		if err != nil {
			return nil, err
		}
		out[n] = v
	}
	return out, nil
}

func getXattr(t xattrTarget, name string) (string, error) {
	for {
		size, err := t.get(name, nil)
		if err != nil {
			return "", fmt.Errorf("reading xattr %s: %w", name, err)
		}
		buf := make([]byte, size)
		n, err := t.get(name, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading xattr %s: %w", name, err)
		}
		return string(buf[:n]), nil
	}
}
