package image

import (
	"bytes"
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
