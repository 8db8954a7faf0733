package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageInfo describes one local image, for listings.
type ImageInfo struct {
	Names   []string  // full local names; empty for a dangling image
	Digest  v1.Hash   // manifest digest
	Created time.Time // from the image config
	Size    int64     // manifest, config and layers as the manifest gives them (kept layers uncompressed), in bytes
}

// SaveImage stores img: the blobs the store lacks (layers, config, then
// manifest) and then index.json, rewritten atomically under its lock. Each
// name is normalised (NormalizeLocalName) and moves to img from whatever
// image held it before; an image left without names stays, dangling, like
// podman's <none> images. Without names, img is stored dangling. A name may
// be a digest reference ("registry/x@sha256:..." for an image pulled by
// digest); it is kept as given, since the digest may be that of the index
// img was chosen from.
func (s *Store) SaveImage(ctx context.Context, img v1.Image, names ...string) error {
	full := make([]string, 0, len(names))
	for _, n := range names {
		f, err := NormalizeLocalName(n)
		if err != nil {
			return fmt.Errorf("saving image: %w", err)
		}
		full = append(full, f)
	}
	desc, err := s.writeImageBlobs(ctx, img)
	if err != nil {
		return err
	}
	return s.updateIndex(ctx, func(idx *v1.IndexManifest) error {
		idx.Manifests = placeNames(idx.Manifests, desc, full)
		return nil
	})
}

// placeNames returns manifests with each of names pointing at desc, taken
// from any entry that had it. Images that lose their last name keep a
// nameless entry; desc keeps a nameless one only when it has no name.
func placeNames(manifests []v1.Descriptor, desc v1.Descriptor, names []string) []v1.Descriptor {
	moving := map[string]bool{}
	for _, n := range names {
		moving[n] = true
	}
	var kept []v1.Descriptor
	var losers []v1.Descriptor
	for _, m := range manifests {
		switch n := entryName(m); {
		case moving[n]:
			losers = append(losers, m)
		case n == "" && m.Digest == desc.Digest:
			// dropped: re-added below if desc stays nameless
		default:
			kept = append(kept, m)
		}
	}
	for _, n := range names {
		d := desc
		d.Annotations = map[string]string{refNameAnnotation: n}
		kept = append(kept, d)
	}
	if len(names) == 0 && !hasDigest(kept, desc.Digest) {
		kept = append(kept, desc)
	}
	for _, l := range losers {
		if !hasDigest(kept, l.Digest) {
			l.Annotations = nil
			kept = append(kept, l)
		}
	}
	return kept
}

// writeImageBlobs stores img's missing blobs, manifest last, and returns the
// descriptor of its manifest.
func (s *Store) writeImageBlobs(ctx context.Context, img v1.Image) (v1.Descriptor, error) {
	digest, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: listing layers: %w", digest, err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("saving image %s: %w", digest, err)
		}
		if s.HasBlob(ld) {
			continue
		}
		// A layer the store keeps only unpacked has no blob to store: the OCI image layout
		// allows blobs to be fulfilled elsewhere, here by layers/ (KeptLayer) or by the
		// registry the layer came from (remote.go).
		if s.isKept(l, ld) || s.hasSource(ld) {
			continue
		}
		if err := s.fetchBlob(ctx, l, ld); err != nil {
			return v1.Descriptor{}, fmt.Errorf("saving image %s: %w", digest, err)
		}
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: reading config: %w", digest, err)
	}
	configName, err := img.ConfigName()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: %w", digest, err)
	}
	if _, _, err := s.WriteBlob(ctx, bytes.NewReader(config), configName); err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: config: %w", digest, err)
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: reading manifest: %w", digest, err)
	}
	_, size, err := s.WriteBlob(ctx, bytes.NewReader(manifest), digest)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: manifest: %w", digest, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("saving image %s: %w", digest, err)
	}
	return v1.Descriptor{MediaType: mt, Size: size, Digest: digest}, nil
}

// KeptLayer returns the directory of a layer the store keeps only unpacked: an uncompressed
// layer (media type mt) named by its diffID, with no blob, unpacked in layers/. Its blob is the
// directory's tar (image.Layer.Dir).
func (s *Store) KeptLayer(mt types.MediaType, digest, diffID v1.Hash) (string, bool) {
	if mt != types.OCIUncompressedLayer && mt != types.DockerUncompressedLayer || digest != diffID || s.HasBlob(digest) {
		return "", false
	}
	return s.LayerDir(diffID)
}

// Image returns the local image called name (normalised with
// NormalizeLocalName) or with the manifest digest name ("sha256:<hex>").
// The error wraps ErrNotFound when the store has no such image.
func (s *Store) Image(name string) (v1.Image, error) {
	desc, err := s.find(name)
	if err != nil {
		return nil, err
	}
	img, err := layout.Path(s.root).Image(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading local image %s (%s): %w", name, desc.Digest, err)
	}
	return img, nil
}

// find returns the index entry for a name or digest.
func (s *Store) find(name string) (v1.Descriptor, error) {
	idx, err := s.readIndex()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return findIn(idx, name)
}

// findIn returns the entry of idx for a name or digest.
func findIn(idx *v1.IndexManifest, name string) (v1.Descriptor, error) {
	if strings.HasPrefix(name, "sha256:") {
		h, err := v1.NewHash(name)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("looking up local image %s: %w", name, err)
		}
		for _, m := range idx.Manifests {
			if m.Digest == h {
				return m, nil
			}
		}
		return v1.Descriptor{}, fmt.Errorf("local image %s: %w", name, ErrNotFound)
	}
	full, err := NormalizeLocalName(name)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("looking up local image: %w", err)
	}
	for _, m := range idx.Manifests {
		if entryName(m) == full {
			return m, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("local image %s: %w", full, ErrNotFound)
}

// Images lists the local images, one entry per manifest digest, in the
// order they were first stored.
func (s *Store) Images() ([]ImageInfo, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	pos := map[v1.Hash]int{}
	for _, m := range idx.Manifests {
		i, seen := pos[m.Digest]
		if !seen {
			info, err := s.describeImage(m)
			if err != nil {
				return nil, err
			}
			i = len(out)
			pos[m.Digest] = i
			out = append(out, info)
		}
		if n := entryName(m); n != "" {
			out[i].Names = append(out[i].Names, n)
		}
	}
	return out, nil
}

// describeImage reads the manifest and config of one entry.
func (s *Store) describeImage(desc v1.Descriptor) (ImageInfo, error) {
	f, err := os.Open(s.BlobPath(desc.Digest))
	if err != nil {
		return ImageInfo{}, fmt.Errorf("listing image %s: %w", desc.Digest, err)
	}
	defer f.Close()
	m, err := v1.ParseManifest(f)
	if err != nil {
		return ImageInfo{}, fmt.Errorf("listing image %s: reading manifest: %w", desc.Digest, err)
	}
	info := ImageInfo{Digest: desc.Digest, Size: desc.Size + m.Config.Size}
	for _, l := range m.Layers {
		info.Size += l.Size
	}
	cf, err := os.Open(s.BlobPath(m.Config.Digest))
	if err != nil {
		return ImageInfo{}, fmt.Errorf("listing image %s: %w", desc.Digest, err)
	}
	defer cf.Close()
	config, err := v1.ParseConfigFile(cf)
	if err != nil {
		return ImageInfo{}, fmt.Errorf("listing image %s: reading config %s: %w", desc.Digest, m.Config.Digest, err)
	}
	info.Created = config.Created.Time
	return info, nil
}

// RemoveImage removes a local name, or every name of an image given by
// digest ("sha256:<hex>"). An image whose last name goes is removed from the
// index. Blobs and layers stay for a later garbage collection, since other
// images and the build cache may share them. The error wraps ErrNotFound
// when nothing matched.
func (s *Store) RemoveImage(name string) error {
	return s.updateIndex(context.Background(), func(idx *v1.IndexManifest) error {
		desc, err := findIn(idx, name)
		if err != nil {
			return err
		}
		byDigest := strings.HasPrefix(name, "sha256:")
		kept := idx.Manifests[:0]
		for _, m := range idx.Manifests {
			if m.Digest == desc.Digest && (byDigest || entryName(m) == entryName(desc)) {
				continue
			}
			kept = append(kept, m)
		}
		idx.Manifests = kept
		return nil
	})
}
