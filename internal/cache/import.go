package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/store"
)

// refName is the ref.name annotation of the cache manifest in an OCI layout directory.
const refName = "kiln-cache"

// Source is an imported cache. It implements the solver's CacheSource.
type Source struct {
	spec  Spec
	steps map[string]store.CachedStep
	img   v1.Image
}

// ErrNotFound is wrapped by Import when the cache does not exist yet (a first build).
var ErrNotFound = errors.New("no cache there yet")

// Import reads the index of the cache spec names. Layers are not fetched: Layer opens them
// when the build needs them, under ctx.
func Import(ctx context.Context, spec Spec, reg *registry.Client) (*Source, error) {
	var img v1.Image
	switch spec.Type {
	case "registry":
		var err error
		img, err = reg.Image(ctx, spec.Ref)
		var rerr *registry.Error
		if errors.As(err, &rerr) && rerr.Status == 404 {
			return nil, fmt.Errorf("importing the cache from %s: %w", spec, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("importing the cache: %w", err)
		}
	case "local":
		var err error
		if img, err = layoutImage(spec.Dir); err != nil {
			return nil, fmt.Errorf("importing the cache from %s: %w", spec, err)
		}
	default:
		return nil, fmt.Errorf("importing the cache: unknown type %q", spec.Type)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("importing the cache from %s: %w", spec, err)
	}
	if manifest.Config.MediaType != IndexMediaType {
		return nil, fmt.Errorf("importing the cache from %s: it is not a kiln cache (its config is %s, not %s)", spec, manifest.Config.MediaType, IndexMediaType)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("importing the cache from %s: %w", spec, err)
	}
	steps, err := parseIndex(raw)
	if err != nil {
		return nil, fmt.Errorf("importing the cache from %s: %w", spec, err)
	}
	return &Source{spec: spec, steps: steps, img: img}, nil
}

// layoutImage opens the cache manifest of an OCI layout directory.
func layoutImage(dir string) (v1.Image, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for i := len(m.Manifests) - 1; i >= 0; i-- {
		if m.Manifests[i].Annotations[refNameAnnotation] == refName {
			return idx.Image(m.Manifests[i].Digest)
		}
	}
	return nil, ErrNotFound
}

// refNameAnnotation is the OCI annotation naming a manifest in a layout.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Name implements solver.CacheSource.
func (s *Source) Name() string { return s.spec.String() }

// Len is the number of steps the cache records.
func (s *Source) Len() int { return len(s.steps) }

// Step implements solver.CacheSource.
func (s *Source) Step(key string) (store.CachedStep, bool) {
	step, ok := s.steps[key]
	return step, ok
}

// Layer implements solver.CacheSource.
func (s *Source) Layer(_ context.Context, step store.CachedStep) (v1.Layer, error) {
	if step.Layer == nil || step.DiffID == nil {
		return nil, fmt.Errorf("the step has no layer")
	}
	l, err := s.img.LayerByDigest(step.Layer.Digest)
	if err != nil {
		return nil, err
	}
	return &recordedLayer{Layer: l, diffID: *step.DiffID}, nil
}

// recordedLayer is a cache layer with the diffID its step recorded: the cache's config is
// its index, not an image config listing diffIDs.
type recordedLayer struct {
	v1.Layer
	diffID v1.Hash
}

// DiffID implements v1.Layer.
func (l *recordedLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
