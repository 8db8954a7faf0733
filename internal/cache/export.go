package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/store"
)

// LayerFunc returns the layer a step recorded: from the store, or from the cache it was
// imported from when the build never needed its content.
type LayerFunc func(step store.CachedStep) (v1.Layer, error)

// Export writes steps (by key) as a cache where spec says. The index is replaced, not merged:
// the cache holds what this build made or reused, so it does not grow without bound.
func Export(ctx context.Context, spec Spec, reg *registry.Client, steps map[string]store.CachedStep, layer LayerFunc) error {
	img, err := newArtifact(steps, layer)
	if err != nil {
		return fmt.Errorf("exporting the cache to %s: %w", spec, err)
	}
	switch spec.Type {
	case "registry":
		if err := reg.Push(ctx, img, spec.Ref); err != nil {
			return fmt.Errorf("exporting the cache: %w", err)
		}
	case "local":
		if err := writeLayout(spec.Dir, img); err != nil {
			return fmt.Errorf("exporting the cache to %s: %w", spec, err)
		}
	default:
		return fmt.Errorf("exporting the cache: unknown type %q", spec.Type)
	}
	return nil
}

// writeLayout puts img into the OCI layout at dir as the kiln-cache manifest, replacing the
// previous one, and removes the blobs nothing refers to any more.
func writeLayout(dir string, img v1.Image) error {
	p, err := layout.FromPath(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !exists(dir+"/index.json") {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		return err
	}
	annotations := map[string]string{refNameAnnotation: refName}
	if err := p.ReplaceImage(img, match.Annotation(refNameAnnotation, refName), layout.WithAnnotations(annotations)); err != nil {
		return err
	}
	unused, err := p.GarbageCollect()
	if err != nil {
		return err
	}
	for _, h := range unused {
		if err := p.RemoveBlob(h); err != nil {
			return err
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// artifact is the cache as an image: the index as config, the step layers as layers.
type artifact struct {
	manifest, config []byte
	layers           map[v1.Hash]v1.Layer
}

// newArtifact assembles the cache image for steps.
func newArtifact(steps map[string]store.CachedStep, layer LayerFunc) (v1.Image, error) {
	config, err := json.Marshal(index{Version: 1, Steps: steps})
	if err != nil {
		return nil, err
	}
	a := &artifact{config: config, layers: map[v1.Hash]v1.Layer{}}
	var descs []v1.Descriptor
	for _, step := range steps {
		if step.Layer == nil || a.layers[step.Layer.Digest] != nil {
			continue
		}
		l, err := layer(step)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", step.Layer.Digest, err)
		}
		a.layers[step.Layer.Digest] = l
		descs = append(descs, v1.Descriptor{MediaType: step.Layer.MediaType, Size: step.Layer.Size, Digest: step.Layer.Digest})
	}
	sort.Slice(descs, func(i, j int) bool { return descriptorKey(descs[i]) < descriptorKey(descs[j]) })
	cfgDigest, cfgSize, err := v1.SHA256(bytes.NewReader(config))
	if err != nil {
		return nil, err
	}
	if descs == nil {
		descs = []v1.Descriptor{}
	}
	a.manifest, err = json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: IndexMediaType, Size: cfgSize, Digest: cfgDigest},
		Layers:        descs,
	})
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(a)
}

func (a *artifact) RawConfigFile() ([]byte, error)      { return a.config, nil }
func (a *artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("the cache has no blob %s", h)
}
