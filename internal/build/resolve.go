package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/store"
)

// resolver finds base images: the local store first (as buildah and podman do, unless --pull),
// then the registry. Pulled images are saved in the local store under their full name.
type resolver struct {
	store    *store.Store
	registry *registry.Client
	pull     bool
	progress io.Writer
	// platform is the build's platform; the registry client selects it from indexes.
	platform string
	// lazy pulls only the blobs of base images, leaving their unpacking to the first step
	// that needs the rootfs: for builds that import a cache, where most steps are expected to
	// hit. Otherwise layers are unpacked as they download, in one pass.
	lazy bool
	// extract are the options layers are unpacked with while they are pulled.
	extract archive.ExtractOptions
	// pulling is the time spent pulling, summed over images (they may overlap).
	pulling atomic.Int64
}

func (r *resolver) Resolve(ctx context.Context, ref, platform string) (v1.Image, error) {
	if platform != "" && platform != r.platform {
		return nil, fmt.Errorf("--platform=%s: kiln builds only for the platform it runs on, %s", platform, r.platform)
	}
	candidates := localCandidates(ref)
	if !r.pull || isLocalOnly(ref) {
		for _, c := range candidates {
			img, err := r.store.Image(c)
			if err == nil {
				return img, nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("looking up %s in the local store: %w", c, err)
			}
		}
	}
	if isLocalOnly(ref) {
		return nil, fmt.Errorf("image %s not found in the local store", ref)
	}
	fmt.Fprintf(r.progress, "pulling %s\n", ref)
	start := time.Now()
	defer func() { r.pulling.Add(int64(time.Since(start))) }()
	img, err := r.registry.Image(ctx, ref)
	if err != nil {
		return nil, err
	}
	full, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %s: %w", ref, err)
	}
	if r.lazy {
		// Only the blobs: layers are unpacked when a step needs the rootfs, which a build
		// whose every step hits the cache never does.
		layers, err := img.Layers()
		if err != nil {
			return nil, fmt.Errorf("pulling %s: %w", ref, err)
		}
		if err := r.store.FetchBlobs(ctx, layers); err != nil {
			return nil, fmt.Errorf("pulling %s: %w", ref, err)
		}
	} else if _, err := r.store.Unpack(ctx, img, r.extract); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	if err := r.store.SaveImage(ctx, img, full.Name()); err != nil {
		return nil, fmt.Errorf("saving %s in the local store: %w", ref, err)
	}
	return r.store.Image(full.Name())
}

// localCandidates are the local store names ref may have: as given when fully qualified,
// localhost/NAME for short names built here, and the registry's full name.
func localCandidates(ref string) []string {
	var out []string
	if strings.HasPrefix(ref, "sha256:") {
		return []string{ref}
	}
	if n, err := store.NormalizeLocalName(ref); err == nil {
		out = append(out, n)
	}
	if full, err := name.ParseReference(ref); err == nil && !contains(out, full.Name()) {
		out = append(out, full.Name())
	}
	return out
}

// isLocalOnly reports references that only the local store can hold: digests of local images
// and names under localhost/ without a port.
func isLocalOnly(ref string) bool {
	return strings.HasPrefix(ref, "sha256:") || strings.HasPrefix(ref, "localhost/")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
