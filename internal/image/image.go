package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// New assembles an image from its config and layers, in format f. The config's rootfs diff_ids
// are set from the layers. Layers keep their bytes; their media types follow the format.
func New(cfg *v1.ConfigFile, layers []*Layer, f Format) (v1.Image, error) {
	c := *cfg
	c.RootFS = v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}}
	img := &assembled{layers: map[v1.Hash]*Layer{}}
	manifest := v1.Manifest{SchemaVersion: 2, Layers: []v1.Descriptor{}}
	manifest.MediaType, manifest.Config.MediaType = types.OCIManifestSchema1, types.OCIConfigJSON
	if f == Docker {
		manifest.MediaType, manifest.Config.MediaType = types.DockerManifestSchema2, types.DockerConfigJSON
	}
	for _, l := range layers {
		mt, err := convertMediaType(f, l.Desc.MediaType)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Desc.Digest, err)
		}
		cl := *l
		cl.Desc = v1.Descriptor{MediaType: mt, Size: l.Desc.Size, Digest: l.Desc.Digest}
		img.layers[cl.Desc.Digest] = &cl
		img.order = append(img.order, cl.Desc.Digest)
		manifest.Layers = append(manifest.Layers, cl.Desc)
		c.RootFS.DiffIDs = append(c.RootFS.DiffIDs, l.Diff)
	}
	raw, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("encoding image config: %w", err)
	}
	img.config = raw
	manifest.Config.Size = int64(len(raw))
	if manifest.Config.Digest, _, err = v1.SHA256(bytes.NewReader(raw)); err != nil {
		return nil, err
	}
	if img.manifest, err = json.Marshal(&manifest); err != nil {
		return nil, fmt.Errorf("encoding image manifest: %w", err)
	}
	img.mediaType = manifest.MediaType
	full, err := partial.CompressedToImage(img)
	if err != nil {
		return nil, err
	}
	return &withLayers{Image: full, a: img}, nil
}

// assembled implements partial.CompressedImageCore over raw JSON and store blobs.
type assembled struct {
	config, manifest []byte
	mediaType        types.MediaType
	layers           map[v1.Hash]*Layer
	order            []v1.Hash // the manifest's layers
}

// withLayers is an assembled image whose layers are its own *Layer values rather than
// go-containerregistry's wrappers of them, which would hide what else a Layer says: where a
// pulled layer's blob is to be had (SourceRepository), so that a push can mount it.
type withLayers struct {
	v1.Image
	a *assembled
}

// Layers implements v1.Image.
func (w *withLayers) Layers() ([]v1.Layer, error) {
	out := make([]v1.Layer, len(w.a.order))
	for i, h := range w.a.order {
		out[i] = w.a.layers[h]
	}
	return out, nil
}

// LayerByDigest implements v1.Image.
func (w *withLayers) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := w.a.layers[h]; ok {
		return l, nil
	}
	return w.Image.LayerByDigest(h)
}

func (a *assembled) RawConfigFile() ([]byte, error)      { return a.config, nil }
func (a *assembled) MediaType() (types.MediaType, error) { return a.mediaType, nil }
func (a *assembled) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *assembled) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("image has no layer %s", h)
}

// Locator finds layers in the store: their blobs, the directories of the layers it keeps
// only unpacked, and the repositories of pulled layers, whose blobs it does not keep.
type Locator interface {
	BlobPath(v1.Hash) string
	KeptLayer(mt types.MediaType, digest, diffID v1.Hash) (string, bool)
	BlobSource(v1.Hash) (string, bool)
	OpenBlob(v1.Descriptor) (io.ReadCloser, error)
}

// StoredLayer describes a layer of the store: its blob; or, for an uncompressed layer the
// store keeps only unpacked, its directory, from which the blob is written again when read;
// or, for a pulled layer, the repository its blob is downloaded from again when read.
func StoredLayer(st Locator, desc v1.Descriptor, diffID v1.Hash) *Layer {
	l := &Layer{Path: st.BlobPath(desc.Digest), Desc: desc, Diff: diffID}
	l.Dir, _ = st.KeptLayer(desc.MediaType, desc.Digest, diffID)
	if l.Dir == "" {
		if repo, ok := st.BlobSource(desc.Digest); ok {
			l.Source = repo
			l.fetch = func() (io.ReadCloser, error) { return st.OpenBlob(desc) }
		}
	}
	return l
}

// IsUncompressed reports whether mt is the media type of an uncompressed layer tar.
func IsUncompressed(mt types.MediaType) bool {
	return mt == types.OCIUncompressedLayer || mt == types.DockerUncompressedLayer
}

// StoredLayers describes the layers of img, which are in the store (StoredLayer): the base
// layers of a build, after the store has pulled them.
func StoredLayers(img v1.Image, st Locator) ([]*Layer, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image has %d layers but %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	layers := make([]*Layer, len(m.Layers))
	for i, d := range m.Layers {
		layers[i] = StoredLayer(st, v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest}, cfg.RootFS.DiffIDs[i])
	}
	return layers, nil
}
