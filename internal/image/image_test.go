package image

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/gzip"
)

// gzipLayer writes a one-file layer blob and returns it as a Layer.
func gzipLayer(t *testing.T, dir string) *Layer {
	t.Helper()
	var tarBuf bytes.Buffer
	// An empty tar is enough for digest bookkeeping: two zero blocks.
	tarBuf.Write(make([]byte, 1024))
	diff, _, err := v1.SHA256(bytes.NewReader(tarBuf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	digest, size, err := v1.SHA256(bytes.NewReader(gz.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, digest.Hex)
	if err := os.WriteFile(p, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Layer{Path: p, Desc: v1.Descriptor{MediaType: types.OCILayer, Size: size, Digest: digest}, Diff: diff}
}

func TestNewIsAValidImageInBothFormats(t *testing.T) {
	l := gzipLayer(t, t.TempDir())
	cfg := &v1.ConfigFile{OS: "linux", Architecture: "amd64", Config: v1.Config{Cmd: []string{"/hello"}}}
	for _, tc := range []struct {
		format              Format
		manifest, layerType types.MediaType
	}{
		{OCI, types.OCIManifestSchema1, types.OCILayer},
		{Docker, types.DockerManifestSchema2, types.DockerLayer},
	} {
		img, err := New(cfg, []*Layer{l}, tc.format)
		if err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if err := validate.Image(img); err != nil {
			t.Errorf("%s image does not validate: %v", tc.format, err)
		}
		m, _ := img.Manifest()
		if m.MediaType != tc.manifest || m.Layers[0].MediaType != tc.layerType {
			t.Errorf("%s: manifest %s with layer %s", tc.format, m.MediaType, m.Layers[0].MediaType)
		}
		got, _ := img.ConfigFile()
		if len(got.RootFS.DiffIDs) != 1 || got.RootFS.DiffIDs[0] != l.Diff {
			t.Errorf("%s: diff_ids %v, want [%s]", tc.format, got.RootFS.DiffIDs, l.Diff)
		}
	}
}

func TestZstdLayersNeedOCI(t *testing.T) {
	if _, err := LayerMediaType(Docker, Zstd); err == nil {
		t.Error("a docker-format image accepted a zstd layer")
	}
	l := gzipLayer(t, t.TempDir())
	l.Desc.MediaType = types.OCILayerZStd
	if _, err := New(&v1.ConfigFile{}, []*Layer{l}, Docker); err == nil {
		t.Error("New put a zstd layer into a docker-format image")
	}
}

// pulledLocator is a store that keeps one layer without its blob, pulled from repo.
type pulledLocator struct {
	digest v1.Hash
	repo   string
	blob   []byte
	opened int
}

func (p *pulledLocator) BlobPath(h v1.Hash) string { return filepath.Join("/nonexistent", h.Hex) }
func (p *pulledLocator) KeptLayer(types.MediaType, v1.Hash, v1.Hash) (string, bool) {
	return "", false
}
func (p *pulledLocator) BlobSource(h v1.Hash) (string, bool) { return p.repo, h == p.digest }
func (p *pulledLocator) OpenBlob(d v1.Descriptor) (io.ReadCloser, error) {
	p.opened++
	return io.NopCloser(bytes.NewReader(p.blob)), nil
}

// TestPulledLayerKeepsItsSource: an image assembled from a layer the store keeps without its
// blob hands out that layer itself, which names its repository (for a push to mount it) and
// reads its blob through the store.
func TestPulledLayerKeepsItsSource(t *testing.T) {
	dir := t.TempDir()
	l := gzipLayer(t, dir)
	blob, err := os.ReadFile(l.Path)
	if err != nil {
		t.Fatal(err)
	}
	st := &pulledLocator{digest: l.Desc.Digest, repo: "registry.example/base", blob: blob}
	stored := StoredLayer(st, l.Desc, l.Diff)
	img, err := New(&v1.ConfigFile{OS: "linux", Architecture: "amd64"}, []*Layer{stored}, OCI)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("image does not validate: %v", err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v, %v", layers, err)
	}
	src, ok := layers[0].(interface{ SourceRepository() string })
	if !ok || src.SourceRepository() != st.repo {
		t.Errorf("the image's layer does not name its repository %s", st.repo)
	}
	if st.opened == 0 {
		t.Error("the layer's blob was not read through the store")
	}
}
