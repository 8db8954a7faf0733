package e2e

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fileInfo is what the differential harness compares about one path of a
// flattened image: never timestamps.
type fileInfo struct {
	Type     string // dir, reg, symlink, char, block, fifo
	Mode     int64  // permission and setuid/setgid/sticky bits
	UID, GID int
	Link     string // symlink target
	Digest   string // sha256 of a regular file's content
	Dev      string // major:minor of a device node
}

func (f fileInfo) String() string {
	s := fmt.Sprintf("%s %04o %d:%d", f.Type, f.Mode, f.UID, f.GID)
	if f.Link != "" {
		s += " -> " + f.Link
	}
	if f.Digest != "" {
		s += " " + f.Digest[:12]
	}
	if f.Dev != "" {
		s += " dev " + f.Dev
	}
	return s
}

// fileTree is a flattened image: absolute clean path -> fileInfo.
type fileTree map[string]fileInfo

// flatten applies img's layers in order, whiteouts included, in memory.
func flatten(img v1.Image) (fileTree, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	tree := fileTree{}
	for i, l := range layers {
		if err := applyLayer(tree, l); err != nil {
			d, _ := l.Digest()
			return nil, fmt.Errorf("applying layer %d (%s): %w", i, d, err)
		}
	}
	return tree, nil
}

func applyLayer(tree fileTree, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	// Whiteouts hide lower layers only: collect this layer's entries first,
	// apply its whiteouts to the tree, then add its entries.
	added := fileTree{}
	hardlinks := map[string]string{}
	var whiteouts, opaques []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		p := cleanPath(h.Name)
		dir, base := path.Split(p)
		switch {
		case base == ".wh..wh..opq":
			opaques = append(opaques, path.Clean(dir))
			continue
		case strings.HasPrefix(base, ".wh."):
			whiteouts = append(whiteouts, path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			continue
		}
		if h.Typeflag == tar.TypeLink {
			hardlinks[p] = cleanPath(h.Linkname)
			continue
		}
		fi, err := entryInfo(h, tr)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if p != "/" {
			added[p] = fi
		}
	}
	for _, d := range opaques {
		removeChildren(tree, d)
	}
	for _, w := range whiteouts {
		delete(tree, w)
		removeChildren(tree, w)
	}
	for p, fi := range added {
		if old, ok := tree[p]; ok && old.Type == "dir" && fi.Type != "dir" {
			removeChildren(tree, p)
		}
		tree[p] = fi
	}
	// A hard link is compared as the file it names.
	for p, target := range hardlinks {
		fi, ok := tree[target]
		if !ok {
			return fmt.Errorf("hard link %s -> %s: target missing", p, target)
		}
		tree[p] = fi
	}
	addParents(tree)
	return nil
}

func entryInfo(h *tar.Header, r io.Reader) (fileInfo, error) {
	fi := fileInfo{Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid}
	switch h.Typeflag {
	case tar.TypeDir:
		fi.Type = "dir"
	case tar.TypeReg:
		fi.Type = "reg"
		sum := sha256.New()
		if _, err := io.Copy(sum, r); err != nil {
			return fi, err
		}
		fi.Digest = hex.EncodeToString(sum.Sum(nil))
	case tar.TypeSymlink:
		fi.Type, fi.Link = "symlink", h.Linkname
		// Symlink permission bits mean nothing on Linux and tools disagree on them.
		fi.Mode = 0o777
	case tar.TypeChar, tar.TypeBlock:
		fi.Type = map[byte]string{tar.TypeChar: "char", tar.TypeBlock: "block"}[h.Typeflag]
		fi.Dev = fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
	case tar.TypeFifo:
		fi.Type = "fifo"
	default:
		return fi, fmt.Errorf("unsupported tar entry type %q", h.Typeflag)
	}
	return fi, nil
}

// cleanPath turns "./a/b/", "a/b" and "/a/b" into "/a/b".
func cleanPath(name string) string {
	return path.Clean("/" + name)
}

func removeChildren(tree fileTree, dir string) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for p := range tree {
		if strings.HasPrefix(p, prefix) {
			delete(tree, p)
		}
	}
}

// addParents records directories that a layer implies but does not list,
// as root-owned 0755 (what tar extractors create).
func addParents(tree fileTree) {
	for p := range tree {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := tree[d]; ok {
				break
			}
			tree[d] = fileInfo{Type: "dir", Mode: 0o755}
		}
	}
}
