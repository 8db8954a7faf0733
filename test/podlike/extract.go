package podlike

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// extractImage writes the flattened file system of the only image in
// layoutDir into dest, adding base to every owner id. Device nodes are
// skipped: the pod's /dev is a tmpfs the runtime fills.
func extractImage(ctx context.Context, layoutDir, dest string, base int) error {
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		return fmt.Errorf("opening layout: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading layout index: %w", err)
	}
	if len(im.Manifests) != 1 {
		return fmt.Errorf("layout holds %d images, want 1", len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return fmt.Errorf("reading image %s: %w", im.Manifests[0].Digest, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	if err := os.Chown(dest, base, base); err != nil {
		return err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	r, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer r.Close()
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading flattened image: %w", err)
		}
		if err := extractEntry(r, h, tr, base); err != nil {
			return fmt.Errorf("extracting %s: %w", h.Name, err)
		}
	}
}

// extractEntry creates one tar entry inside r. os.Root keeps every path,
// symlinks included, inside the root file system.
func extractEntry(r *os.Root, h *tar.Header, body io.Reader, base int) error {
	name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
	if name == "" {
		return nil
	}
	if err := r.MkdirAll(path.Dir(name), 0o755); err != nil && path.Dir(name) != "." {
		return err
	}
	mode := os.FileMode(h.Mode & 0o777)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := r.Mkdir(name, mode); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	case tar.TypeReg:
		f, err := r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, body); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	case tar.TypeSymlink:
		_ = r.Remove(name)
		if err := r.Symlink(h.Linkname, name); err != nil {
			return err
		}
		return r.Lchown(name, base+h.Uid, base+h.Gid)
	case tar.TypeLink:
		_ = r.Remove(name)
		return r.Link(strings.TrimPrefix(path.Clean("/"+h.Linkname), "/"), name)
	default:
		return nil // devices and fifos: not needed in a pod rootfs
	}
	if err := r.Lchown(name, base+h.Uid, base+h.Gid); err != nil {
		return err
	}
	// Chmod after chown: chown clears setuid and setgid bits.
	return r.Chmod(name, os.FileMode(h.Mode&0o777)|modeBits(h.Mode))
}

// modeBits converts tar's setuid, setgid and sticky bits to os.FileMode bits.
func modeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// installFile copies src to dst (mode 0755) and gives it to the pod's root.
func installFile(src, dst string, base int) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		return err
	}
	if err := os.Chown(dst, base, base); err != nil {
		return err
	}
	return os.Chmod(dst, 0o755)
}
