package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// refNameAnnotation names an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// layoutImage is one image manifest of an OCI image layout (kiln's store is
// one; buildah's images are pushed into one to be measured).
type layoutImage struct {
	dir      string
	manifest *v1.Manifest
}

// blobPath is where the blob h lives in the layout.
func (img layoutImage) blobPath(h v1.Hash) string {
	return filepath.Join(img.dir, "blobs", h.Algorithm, h.Hex)
}

// readLayoutImage reads an image of the OCI layout in dir: the manifest with
// this digest when digest is set, else the one index.json names refName,
// else the only one index.json lists.
func readLayoutImage(dir, digest, refName string) (layoutImage, error) {
	img := layoutImage{dir: dir}
	if digest == "" {
		data, err := os.ReadFile(filepath.Join(dir, "index.json"))
		if err != nil {
			return img, fmt.Errorf("reading the OCI layout %s: %w", dir, err)
		}
		index, err := v1.ParseIndexManifest(bytes.NewReader(data))
		if err != nil {
			return img, fmt.Errorf("reading %s/index.json: %w", dir, err)
		}
		for _, d := range index.Manifests {
			if d.Annotations[refNameAnnotation] == refName {
				digest = d.Digest.String()
			}
		}
		if digest == "" && len(index.Manifests) == 1 {
			digest = index.Manifests[0].Digest.String()
		}
		if digest == "" {
			return img, fmt.Errorf("reading the OCI layout %s: no image named %s among %d", dir, refName, len(index.Manifests))
		}
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return img, fmt.Errorf("reading the OCI layout %s: manifest digest %q: %w", dir, digest, err)
	}
	data, err := os.ReadFile(img.blobPath(h))
	if err != nil {
		return img, fmt.Errorf("reading manifest %s: %w", h, err)
	}
	if img.manifest, err = v1.ParseManifest(bytes.NewReader(data)); err != nil {
		return img, fmt.Errorf("parsing manifest %s: %w", h, err)
	}
	return img, nil
}

// config reads the image's configuration.
func (img layoutImage) config() (*v1.ConfigFile, error) {
	data, err := os.ReadFile(img.blobPath(img.manifest.Config.Digest))
	if err != nil {
		return nil, fmt.Errorf("reading image config %s: %w", img.manifest.Config.Digest, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parsing image config %s: %w", img.manifest.Config.Digest, err)
	}
	return cfg, nil
}

// sizeCache remembers the uncompressed size of layer blobs by digest, so
// that identical layers (the base image's, kiln's reproducible ones) are
// decompressed once.
type sizeCache map[v1.Hash]int64

// sizes returns the sum of the layer blobs' sizes (compressed, as stored or
// pushed) and of their decompressed sizes.
func (img layoutImage) sizes(cache sizeCache) (compressed, uncompressed int64, err error) {
	for _, l := range img.manifest.Layers {
		compressed += l.Size
		n, ok := cache[l.Digest]
		if !ok {
			if n, err = img.uncompressedSize(l); err != nil {
				return 0, 0, err
			}
			cache[l.Digest] = n
		}
		uncompressed += n
	}
	return compressed, uncompressed, nil
}

// uncompressedSize decompresses one layer blob and counts its bytes.
func (img layoutImage) uncompressedSize(l v1.Descriptor) (int64, error) {
	f, err := os.Open(img.blobPath(l.Digest))
	if err != nil {
		return 0, fmt.Errorf("opening layer %s: %w", l.Digest, err)
	}
	defer f.Close()
	var r io.Reader
	mt := string(l.MediaType)
	switch {
	case strings.HasSuffix(mt, "gzip"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return 0, fmt.Errorf("decompressing layer %s: %w", l.Digest, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(mt, "zstd"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return 0, fmt.Errorf("decompressing layer %s: %w", l.Digest, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(mt, "tar"):
		return l.Size, nil
	default:
		return 0, fmt.Errorf("layer %s: unknown media type %s", l.Digest, mt)
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return 0, fmt.Errorf("decompressing layer %s: %w", l.Digest, err)
	}
	return n, nil
}

// ownLayerDirs returns the unpacked directories in kiln's store of the
// layers img added on top of its base image (the base is found in the
// store's index.json under baseRef, where kiln records what it pulled).
func ownLayerDirs(store string, img layoutImage, baseRef string) ([]string, error) {
	cfg, err := img.config()
	if err != nil {
		return nil, err
	}
	base, err := readLayoutImage(store, "", baseRef)
	if err != nil {
		return nil, fmt.Errorf("finding the base image %s in the store: %w", baseRef, err)
	}
	baseCfg, err := base.config()
	if err != nil {
		return nil, err
	}
	inBase := map[v1.Hash]bool{}
	for _, d := range baseCfg.RootFS.DiffIDs {
		inBase[d] = true
	}
	var dirs []string
	for _, d := range cfg.RootFS.DiffIDs {
		if inBase[d] {
			continue
		}
		dir := filepath.Join(store, "layers", d.Hex)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("layer %s: no unpacked directory %s in the store", d, dir)
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}
