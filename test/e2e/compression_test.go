package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestLayersCompressedWhenTheyLeave builds, as each user, an image that only goes to the local
// store: its RUN layers must be kept unpacked, uncompressed and without a blob. A second build
// that exports the image takes every step from the cache and compresses those layers; the image
// it writes must unpack and run (umoci, runc), and a third export must find the compressed
// layers already recorded in the cache.
func TestLayersCompressedWhenTheyLeave(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	const dockerfile = `FROM ` + registryAddr + `/busybox:latest
RUN echo one > /one
RUN mkdir /d && echo two > /d/two && ln /d/two /d/link && rm /bin/true
CMD ["cat", "/one", "/d/link"]
`
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			dir := userDir(t, u, "ctx")
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := runKiln(t, u, "build", "-t", "kept:e2e", dir)
			if err != nil {
				t.Fatalf("kiln build: %v\n%s", err, tail(stderr, 20))
			}
			store := storeDir(t, u)
			m, cfg := storeImage(t, store, strings.TrimSpace(stdout))
			if len(m.Layers) != 3 {
				t.Fatalf("local image has %d layers, want 3 (busybox and two RUN steps)", len(m.Layers))
			}
			for i, l := range m.Layers[1:] {
				if l.MediaType != types.OCIUncompressedLayer || l.Digest != cfg.RootFS.DiffIDs[i+1] {
					t.Errorf("RUN layer %d: %s %s, want an uncompressed layer named by its diffID %s", i+1, l.MediaType, l.Digest, cfg.RootFS.DiffIDs[i+1])
				}
				if _, err := os.Stat(filepath.Join(store, "blobs", "sha256", l.Digest.Hex)); err == nil {
					t.Errorf("RUN layer %d: the store holds a blob for it; want it kept unpacked only", i+1)
				}
				if fi, err := os.Stat(filepath.Join(store, "layers", l.Digest.Hex)); err != nil || !fi.IsDir() {
					t.Errorf("RUN layer %d: not unpacked in the store: %v", i+1, err)
				}
			}

			layout := filepath.Join(userDir(t, u, "out"), "oci")
			_, stderr, err = runKiln(t, u, "build", "--output", "type=oci,dest="+layout, dir)
			if err != nil {
				t.Fatalf("kiln build --output: %v\n%s", err, tail(stderr, 20))
			}
			if n := strings.Count(stderr, "--> cached"); n != 2 {
				t.Errorf("export build: %d steps from the cache, want 2\n%s", n, tail(stderr, 20))
			}
			if n := strings.Count(stderr, "kept unpacked by an earlier build"); n != 2 {
				t.Errorf("export build compressed %d kept layers, want 2\n%s", n, tail(stderr, 20))
			}
			img := skopeoInspect(t, layout)
			if len(img.Layers) != 3 {
				t.Fatalf("exported image has %d layers, want 3", len(img.Layers))
			}
			for i, d := range img.Config.RootFS.DiffIDs {
				if d != cfg.RootFS.DiffIDs[i] {
					t.Errorf("layer %d: exported diffID %s, local %s: compressing changed its content", i, d, cfg.RootFS.DiffIDs[i])
				}
			}
			exported := exportedManifest(t, layout)
			for i, l := range exported.Layers {
				if l.MediaType != types.OCILayer {
					t.Errorf("exported layer %d is %s, want gzip", i, l.MediaType)
				}
			}
			if got := runBundle(t, umociUnpack(t, layout, "")); got != "one\ntwo\n" {
				t.Errorf("exported image prints %q, want %q", got, "one\ntwo\n")
			}

			_, stderr, err = runKiln(t, u, "build", "--output", "type=oci,dest="+layout+"2", dir)
			if err != nil {
				t.Fatalf("second kiln build --output: %v\n%s", err, tail(stderr, 20))
			}
			if strings.Contains(stderr, "kept unpacked by an earlier build") {
				t.Errorf("the second export compressed layers again; the cache should name the compressed ones\n%s", tail(stderr, 20))
			}

			// The local image, whose layers are kept, as the base of another build.
			child := userDir(t, u, "child")
			childFile := "FROM localhost/kept:e2e\nRUN cat /one /d/two > /three\nCMD [\"cat\", \"/three\"]\n"
			if err := os.WriteFile(filepath.Join(child, "Dockerfile"), []byte(childFile), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, stderr, err := runKiln(t, u, "build", "-t", "child:e2e", child); err != nil {
				t.Fatalf("kiln build FROM the local image: %v\n%s", err, tail(stderr, 20))
			}
			childLayout := filepath.Join(userDir(t, u, "out"), "child")
			if _, stderr, err := runKiln(t, u, "build", "--output", "type=oci,dest="+childLayout, child); err != nil {
				t.Fatalf("kiln build --output FROM the local image: %v\n%s", err, tail(stderr, 20))
			}
			if got := runBundle(t, umociUnpack(t, childLayout, "")); got != "one\ntwo\n" {
				t.Errorf("image built FROM the local image prints %q, want %q", got, "one\ntwo\n")
			}
		})
	}
}

// TestChangedKeptLayerIsNotExported changes, as each user's store, a layer the store keeps
// unpacked after the build that made it: an export of the image must fail and say so, not
// write a blob whose content does not match its digest.
func TestChangedKeptLayerIsNotExported(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	dockerfile := "FROM " + registryAddr + "/busybox:latest\nRUN echo original > /file\n"
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			dir := userDir(t, u, "ctx")
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, err := runKiln(t, u, "build", dir)
			if err != nil {
				t.Fatalf("kiln build: %v\n%s", err, tail(stderr, 20))
			}
			m, _ := storeImage(t, storeDir(t, u), strings.TrimSpace(stdout))
			kept := filepath.Join(storeDir(t, u), "layers", m.Layers[len(m.Layers)-1].Digest.Hex, "file")
			if err := os.WriteFile(kept, []byte("tampered\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			layout := filepath.Join(userDir(t, u, "out"), "oci")
			_, stderr, err = runKiln(t, u, "build", "--output", "type=oci,dest="+layout, dir)
			if err == nil {
				t.Fatalf("exporting an image whose kept layer changed succeeded\n%s", tail(stderr, 20))
			}
			if !strings.Contains(stderr, "no longer archives as the layer") {
				t.Errorf("the error does not say the layer changed:\n%s", tail(stderr, 20))
			}
			if _, err := os.Stat(filepath.Join(layout, "index.json")); err == nil {
				t.Errorf("an image was written to %s", layout)
			}
		})
	}
}

// storeImage reads the manifest and config of the image with manifest digest digest from the
// OCI layout of a kiln store.
func storeImage(t *testing.T, store, digest string) (*v1.Manifest, *v1.ConfigFile) {
	t.Helper()
	h, err := v1.NewHash(digest)
	if err != nil {
		t.Fatalf("kiln build printed %q, not a digest: %v", digest, err)
	}
	var m v1.Manifest
	readJSON(t, filepath.Join(store, "blobs", "sha256", h.Hex), &m)
	var cfg v1.ConfigFile
	readJSON(t, filepath.Join(store, "blobs", "sha256", m.Config.Digest.Hex), &cfg)
	return &m, &cfg
}

// exportedManifest reads the manifest of the one image of an OCI layout directory.
func exportedManifest(t *testing.T, layout string) *v1.Manifest {
	t.Helper()
	var idx v1.IndexManifest
	readJSON(t, filepath.Join(layout, "index.json"), &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("%s holds %d images, want 1", layout, len(idx.Manifests))
	}
	var m v1.Manifest
	readJSON(t, filepath.Join(layout, "blobs", "sha256", idx.Manifests[0].Digest.Hex), &m)
	return &m
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
}
