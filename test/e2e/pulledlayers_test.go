package e2e

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/test/faultproxy"
	"github.com/kiln-build/kiln/test/registrytest"
)

// TestPulledLayersKeepNoBlob builds, as each user, FROM an image on a real registry. The
// store must keep the base layers unpacked only: no blob, and a record of the repository they
// came from. A push to another repository of that registry must mount them rather than
// upload them; an export to an OCI layout must download them again and give an image that
// runs (umoci, runc). When the registry no longer serves a base layer, an export must fail
// naming the layer and the repository, and write no layout.
func TestPulledLayersKeepNoBlob(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	r := registrytest.Start(t, registrytest.Options{})
	upstream, _ := url.Parse(r.URL())
	p := faultproxy.New(t, upstream, faultproxy.Options{})
	base := p.Host() + "/e2e/base"
	if _, stderr, err := runKiln(t, Root, "build", "-t", base+":v1", "--push", layeredContext(t, Root)); err != nil {
		t.Fatalf("pushing the base image: %v\n%s", err, tail(stderr, 10))
	}
	raw := mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+base+":v1")
	var manifest struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal([]byte(raw), &manifest); err != nil || len(manifest.Layers) != 4 {
		t.Fatalf("manifest of %s: %v\n%s", base, err, raw)
	}

	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			dir := userDir(t, u, "ctx")
			writeUserFile(t, u, filepath.Join(dir, "Dockerfile"), "FROM "+base+":v1\nRUN echo app > /app\nCMD [\"cat\", \"/app\"]\n")
			uploadsBefore, mountsBefore := p.BlobUploads(), p.BlobMounts()
			app := p.Host() + "/e2e/app-" + string(u) + ":v1"
			if _, stderr, err := runKiln(t, u, "build", "-t", app, "--push", dir); err != nil {
				t.Fatalf("kiln build --push: %v\n%s", err, tail(stderr, 20))
			}
			store := storeDir(t, u)
			uploads, mounts := p.BlobUploads(), p.BlobMounts()
			for _, l := range manifest.Layers {
				hex := strings.TrimPrefix(l.Digest, "sha256:")
				if _, err := os.Stat(filepath.Join(store, "blobs", "sha256", hex)); err == nil {
					t.Errorf("base layer %s: the store holds its blob; want it kept unpacked only", l.Digest)
				}
				if b, err := os.ReadFile(filepath.Join(store, "remote", "sha256", hex)); err != nil || strings.TrimSpace(string(b)) != base {
					t.Errorf("base layer %s: recorded source %q (%v), want %s", l.Digest, b, err, base)
				}
				if n := uploads[l.Digest] - uploadsBefore[l.Digest]; n != 0 {
					t.Errorf("base layer %s uploaded %d times by the push; want it mounted", l.Digest, n)
				}
				if n := mounts[l.Digest] - mountsBefore[l.Digest]; n != 1 {
					t.Errorf("base layer %s mounted %d times by the push, want 1", l.Digest, n)
				}
			}
			checkComplete(t, testRegistry{}, app)

			layout := filepath.Join(userDir(t, u, "out"), "oci")
			if _, stderr, err := runKiln(t, u, "build", "--output", "type=oci,dest="+layout, dir); err != nil {
				t.Fatalf("kiln build --output: %v\n%s", err, tail(stderr, 20))
			}
			if got := runBundle(t, umociUnpack(t, layout, "")); got != "app\n" {
				t.Errorf("exported image prints %q, want %q", got, "app\n")
			}

			lost := manifest.Layers[len(manifest.Layers)-1].Digest
			p.Add(faultproxy.Rule{Method: "GET", Path: `/blobs/` + lost, Kind: faultproxy.Status, Status: 404})
			defer p.Clear()
			gone := layout + "-lost"
			_, stderr, err := runKiln(t, u, "build", "--output", "type=oci,dest="+gone, dir)
			if err == nil {
				t.Fatalf("exporting with a base layer the registry lost succeeded\n%s", tail(stderr, 20))
			}
			line := lastError(t, stderr)
			t.Log(line)
			for _, w := range []string{lost, base, "404"} {
				if !strings.Contains(line, w) {
					t.Errorf("error %q does not mention %q", line, w)
				}
			}
			if _, err := os.Stat(filepath.Join(gone, "index.json")); err == nil {
				t.Errorf("an image was written to %s", gone)
			}
		})
	}
}
