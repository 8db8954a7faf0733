package cache

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/store"
)

func TestParseSpec(t *testing.T) {
	good := []struct {
		in     string
		export bool
		want   Spec
	}{
		{"type=registry,ref=r.example/cache", false, Spec{Type: "registry", Ref: "r.example/cache", Mode: Min}},
		{"r.example/cache:main", false, Spec{Type: "registry", Ref: "r.example/cache:main", Mode: Min}},
		{"type=registry,ref=r.example/c,mode=max", true, Spec{Type: "registry", Ref: "r.example/c", Mode: Max}},
		{"type=local,src=/pvc/cache", false, Spec{Type: "local", Dir: "/pvc/cache", Mode: Min}},
		{"type=local,dest=/pvc/cache,mode=min", true, Spec{Type: "local", Dir: "/pvc/cache", Mode: Min}},
	}
	for _, tt := range good {
		got, err := ParseSpec(tt.in, tt.export)
		if err != nil || got != tt.want {
			t.Errorf("ParseSpec(%q, %v) = %+v, %v; want %+v", tt.in, tt.export, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		in     string
		export bool
		want   string
	}{
		{"type=local,dest=/x", false, "src="},
		{"type=local,src=/x", true, "dest="},
		{"type=registry,ref=r/c,mode=max", false, "mode= is for --cache-to"},
		{"type=registry,ref=r/c,mode=all", true, "min or max"},
		{"type=s3,bucket=b", true, "unknown key"},
		{"type=gha", true, "registry or local"},
		{"type=registry", true, "ref="},
	} {
		if _, err := ParseSpec(tt.in, tt.export); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseSpec(%q, %v): %v, want an error about %q", tt.in, tt.export, err, tt.want)
		}
	}
}

// sampleSteps returns steps whose layers come from a random image, and a LayerFunc for them.
func sampleSteps(t *testing.T) (map[string]store.CachedStep, LayerFunc) {
	t.Helper()
	img, err := random.Image(2000, 2)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	byDigest := map[v1.Hash]v1.Layer{}
	steps := map[string]store.CachedStep{"config-only": {Created: time.Unix(1700000000, 0).UTC()}}
	for i, l := range layers {
		d, _ := l.Digest()
		diff, _ := l.DiffID()
		size, _ := l.Size()
		mt, _ := l.MediaType()
		byDigest[d] = l
		steps[string(rune('a'+i))] = store.CachedStep{Layer: &v1.Descriptor{MediaType: mt, Size: size, Digest: d}, DiffID: &diff, Created: time.Unix(int64(1700000000+i), 0).UTC()}
	}
	return steps, func(step store.CachedStep) (v1.Layer, error) { return byDigest[step.Layer.Digest], nil }
}

// checkRoundTrip imports spec and compares it with steps, reading every layer.
func checkRoundTrip(t *testing.T, spec Spec, reg *registry.Client, steps map[string]store.CachedStep) {
	t.Helper()
	src, err := Import(context.Background(), spec, reg)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != len(steps) {
		t.Fatalf("imported %d steps, exported %d", src.Len(), len(steps))
	}
	for key, want := range steps {
		got, ok := src.Step(key)
		if !ok || !got.Created.Equal(want.Created) {
			t.Fatalf("step %s: %+v, want %+v", key, got, want)
		}
		if want.Layer == nil {
			continue
		}
		l, err := src.Layer(context.Background(), got)
		if err != nil {
			t.Fatal(err)
		}
		if diff, _ := l.DiffID(); diff != *want.DiffID {
			t.Errorf("step %s: diffID %s, want %s", key, diff, want.DiffID)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != want.Layer.Size {
			t.Errorf("step %s: read %d bytes (%v), want %d", key, n, err, want.Layer.Size)
		}
	}
}

func TestLocalRoundTrip(t *testing.T) {
	steps, layer := sampleSteps(t)
	dir := filepath.Join(t.TempDir(), "cache")
	src, dst := Spec{Type: "local", Dir: dir}, Spec{Type: "local", Dir: dir, Mode: Max}
	if _, err := Import(context.Background(), src, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("importing a missing directory: %v, want ErrNotFound", err)
	}
	if err := Export(context.Background(), dst, nil, steps, layer); err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, src, nil, steps)
	// A second export replaces the first, and its unreferenced blobs go.
	fewer := map[string]store.CachedStep{"config-only": steps["config-only"]}
	if err := Export(context.Background(), dst, nil, fewer, layer); err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, src, nil, fewer)
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if len(blobs) != 2 { // manifest and index
		t.Errorf("%d blobs left after replacing the cache, want 2", len(blobs))
	}
}

func TestRegistryRoundTrip(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	reg, err := registry.New(registry.WithKeychain(registry.FileKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	steps, layer := sampleSteps(t)
	spec := Spec{Type: "registry", Ref: host + "/app/cache", Mode: Max}
	if _, err := Import(context.Background(), spec, reg); !errors.Is(err, ErrNotFound) {
		t.Fatalf("importing a missing cache: %v, want ErrNotFound", err)
	}
	if err := Export(context.Background(), spec, reg, steps, layer); err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, spec, reg, steps)

	// An ordinary image is not a cache.
	img, _ := random.Image(10, 1)
	if err := reg.Push(context.Background(), img, host+"/app/image"); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(context.Background(), Spec{Type: "registry", Ref: host + "/app/image"}, reg); err == nil || !strings.Contains(err.Error(), "not a kiln cache") {
		t.Fatalf("importing an image: %v", err)
	}
}
