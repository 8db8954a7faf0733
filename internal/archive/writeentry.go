package archive

import (
	"archive/tar"
	"fmt"
	"io"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// entry writes the header, and for a regular file the content, of the entry base of the
// directory dirfd under the tar name name.
func (d *differ) entry(dirfd int, base, name string, st *unix.Stat_t) error {
	p := fdPath(dirfd, base) // for l* calls: the last element is not followed
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: d.mtime(st),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
		hdr.Size = st.Size
	case unix.S_IFLNK:
		hdr.Typeflag = tar.TypeSymlink
		target, err := readlinkat(dirfd, base)
		if err != nil {
			return fmt.Errorf("reading symlink: %w", err)
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
	xattrs, err := readXattrs(p)
	if err != nil {
		return err
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
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		return d.content(dirfd, base, hdr)
	}
	return nil
}

func (d *differ) writeHeader(hdr *tar.Header) error {
	if err := d.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing header of %s: %w", hdr.Name, err)
	}
	return nil
}

// content copies exactly hdr.Size bytes of base in dirfd; a file that changed size while
// being written is an error rather than a corrupt layer.
func (d *differ) content(dirfd int, base string, hdr *tar.Header) error {
	fd, err := unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening: %w", err)
	}
	f := fdFile(fd, base)
	defer f.Close()
	n, err := io.Copy(d.tw, f)
	if err != nil {
		return fmt.Errorf("copying content: %w", err)
	}
	if n != hdr.Size {
		return fmt.Errorf("copying content: size changed from %d to %d while writing", hdr.Size, n)
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

// readXattrs lists the xattrs of p that belong in a layer: all but overlay metadata.
func readXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if isNoXattr(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing xattrs: %w", err)
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listing xattrs: %w", err)
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
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for _, n := range names {
		v, err := getXattr(p, n)
		if err != nil {
			return nil, err
		}
		out[n] = v
	}
	return out, nil
}

func getXattr(p, name string) (string, error) {
	for {
		size, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return "", fmt.Errorf("reading xattr %s: %w", name, err)
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading xattr %s: %w", name, err)
		}
		return string(buf[:n]), nil
	}
}
