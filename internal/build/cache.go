package build

import (
	"context"
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/cache"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/solver"
	"github.com/kiln-build/kiln/internal/store"
)

// importCaches opens every --cache-from. A cache that cannot be read is a warning, as with
// BuildKit: the build goes on without it.
func importCaches(ctx context.Context, req Request, reg *registry.Client) []*cache.Source {
	var out []*cache.Source
	for _, spec := range req.CacheFrom {
		src, err := cache.Import(ctx, spec, reg)
		switch {
		case errors.Is(err, cache.ErrNotFound):
			fmt.Fprintf(req.Progress, "cache: %s holds no cache yet\n", spec)
		case err != nil:
			fmt.Fprintf(req.Progress, "kiln: warning: %v; building without it\n", err)
		default:
			fmt.Fprintf(req.Progress, "cache: %d steps from %s\n", src.Len(), spec)
			out = append(out, src)
		}
	}
	return out
}

// cacheSources are the imported caches as the solver takes them.
func cacheSources(srcs []*cache.Source) []solver.CacheSource {
	out := make([]solver.CacheSource, len(srcs))
	for i, s := range srcs {
		out[i] = s
	}
	return out
}

// exportCaches writes every --cache-to: the target's steps, or every stage's with mode=max.
// Layers come from the store, or from the imported cache that held them when the build never
// needed their content.
func exportCaches(ctx context.Context, req Request, reg *registry.Client, st *store.Store, res *solver.Result, srcs []*cache.Source) error {
	for _, spec := range req.CacheTo {
		steps := res.Steps
		if spec.Mode == cache.Max {
			steps = res.AllSteps
		}
		byKey := make(map[string]store.CachedStep, len(steps))
		for _, s := range steps {
			byKey[s.Key] = s.CachedStep
		}
		layer := func(step store.CachedStep) (v1.Layer, error) {
			if l := image.StoredLayer(st, *step.Layer, *step.DiffID); l.Dir != "" || st.HasBlob(step.Layer.Digest) {
				return l, nil
			}
			for _, src := range srcs {
				if l, err := src.Layer(ctx, step); err == nil {
					return l, nil
				}
			}
			return nil, fmt.Errorf("neither the store nor an imported cache has it")
		}
		fmt.Fprintf(req.Progress, "cache: exporting %d steps to %s\n", len(byKey), spec)
		if err := cache.Export(ctx, spec, reg, byKey, layer); err != nil {
			return err
		}
	}
	return nil
}
