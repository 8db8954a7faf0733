package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

func TestRequestKind(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v2/", "GET /v2/"},
		{"HEAD", "/v2/bench/cache-lookup/manifests/latest", "HEAD manifests bench/cache-lookup"},
		{"GET", "/v2/busybox/blobs/sha256:abcd", "GET blobs busybox"},
		{"POST", "/v2/a/b/c/blobs/uploads/", "POST blobs/uploads a/b/c"},
		{"PATCH", "/v2/x/blobs/uploads/0123-uuid", "PATCH blobs/uploads x"},
		{"GET", "/v2/x/tags/list", "GET tags x"},
		{"GET", "/favicon.ico", "GET /favicon.ico"},
	} {
		if got := requestKind(tc.method, tc.path); got != tc.want {
			t.Errorf("requestKind(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestNextFreeSubID(t *testing.T) {
	for content, want := range map[string]int64{
		"":                                    100000,
		"a:100000:65536\n":                    165536,
		"a:100000:65536\nb:300000:65536\nbad": 365536,
		"low:1000:10\n":                       100000,
	} {
		if got := nextFreeSubID(content); got != want {
			t.Errorf("nextFreeSubID(%q) = %d, want %d", content, got, want)
		}
	}
}

func TestGoBuildSeconds(t *testing.T) {
	log := `STEP 7/7: RUN --mount=type=cache,target=/root/.cache/go-build echo "BENCH_GO_BUILD_START=$(date +%s.%N)" && go build
BENCH_GO_BUILD_START=1700000000.250000000
BENCH_GO_BUILD_END=1700000012.750000000
inventory: self test passed`
	got, err := goBuildSeconds(log)
	if err != nil || got != 12.5 {
		t.Errorf("goBuildSeconds = %v, %v; want 12.5", got, err)
	}
	if _, err := goBuildSeconds("[stage 1/1] RUN echo BENCH_GO_BUILD_START=$(date)"); err == nil {
		t.Error("goBuildSeconds found marks in a log without any")
	}
}

func TestPickNames(t *testing.T) {
	got, err := pickNames("-builders", " kiln,buildah-vfs,kiln,", builderNames())
	if err != nil || strings.Join(got, ",") != "kiln,buildah-vfs" {
		t.Errorf("pickNames = %v, %v", got, err)
	}
	if _, err := pickNames("-workloads", "gcc,nope", workloadNames()); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("pickNames accepted an unknown name: %v", err)
	}
}

func TestDiskUsageCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("x"), 64*1024)
	if err := os.WriteFile(filepath.Join(dir, "a"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	one, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	linked, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if linked != one {
		t.Errorf("a hard link changed the disk use from %d to %d", one, linked)
	}
	if err := os.WriteFile(filepath.Join(dir, "c"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	two, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if two < one+int64(len(data)) {
		t.Errorf("a second 64 KiB file took the disk use from %d to %d only", one, two)
	}
}

// writeBlob stores data in the layout at dir and returns its descriptor.
func writeBlob(t *testing.T, dir string, data []byte, mt string) v1.Descriptor {
	t.Helper()
	sum := sha256.Sum256(data)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	p := filepath.Join(dir, "blobs", "sha256", h.Hex)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.MediaType("application/vnd.oci.image." + mt), Size: int64(len(data)), Digest: h}
}

func TestLayoutImageSizes(t *testing.T) {
	dir := t.TempDir()
	raw := bytes.Repeat([]byte("layer content "), 10000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	gzLayer := writeBlob(t, dir, gz.Bytes(), "layer.v1.tar+gzip")
	tarLayer := writeBlob(t, dir, []byte("plain tar bytes"), "layer.v1.tar")
	cfg := writeBlob(t, dir, []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`), "config.v1+json")
	manifest, _ := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json",
		Config: cfg, Layers: []v1.Descriptor{gzLayer, tarLayer}})
	md := writeBlob(t, dir, manifest, "manifest.v1+json")
	md.Annotations = map[string]string{refNameAnnotation: "localhost/bench/x:latest"}
	index, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{md}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, byDigest := range []string{"", md.Digest.String()} {
		img, err := readLayoutImage(dir, byDigest, "localhost/bench/x:latest")
		if err != nil {
			t.Fatal(err)
		}
		cache := sizeCache{}
		c, u, err := img.sizes(cache)
		if err != nil {
			t.Fatal(err)
		}
		if wantC, wantU := int64(gz.Len()+15), int64(len(raw)+15); c != wantC || u != wantU {
			t.Errorf("sizes = %d, %d; want %d, %d", c, u, wantC, wantU)
		}
		if cache[gzLayer.Digest] != int64(len(raw)) {
			t.Errorf("the size cache holds %d for the gzip layer, want %d", cache[gzLayer.Digest], len(raw))
		}
	}
	if _, err := readLayoutImage(dir, "", "localhost/other:latest"); err != nil {
		t.Errorf("the only image of a layout should be found whatever its name: %v", err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		"/var/tmp/kiln-bench/runs/gcc-kiln-1": "/var/tmp/kiln-bench/runs/gcc-kiln-1",
		`/a\040b`:                             "/a b",
		`/tab\011x\134y`:                      "/tab\tx\\y",
		`/short\04`:                           `/short\04`,
		`/not\08x`:                            `/not\08x`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFreshFSLeftOversCleared mounts a run filesystem, leaves it as an interrupted benchmark
// would, and checks setup's clean-up unmounts it and empties its image. Root only, as the
// benchmark itself (it makes loop devices).
func TestFreshFSLeftOversCleared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as the benchmark does (losetup, mount): run `sudo go test ./bench`, as make test does under .ci/run")
	}
	runs := t.TempDir()
	dir := filepath.Join(runs, "gcc-kiln-1")
	if err := mountFreshFS(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := clearFreshFSs(runs); err != nil {
		t.Fatal(err)
	}
	if m, err := mountsUnder(runs); err != nil || len(m) != 0 {
		t.Errorf("still mounted after clean-up: %v %v", m, err)
	}
	if _, err := os.Stat(dir + ".img"); !os.IsNotExist(err) {
		t.Errorf("the image is still there: %v", err)
	}
}
