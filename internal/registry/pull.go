package registry

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Image resolves ref (a docker reference: "busybox" means docker.io/library/busybox:latest)
// to an image for the client's platform, choosing the matching manifest when ref points at
// an index. Mirrors of ref's registry are tried first, in order, then the registry itself.
// Layers are fetched lazily, when they are read, under ctx: keep ctx alive while the image is
// in use. A single-platform image is returned whatever its platform.
func (c *Client) Image(ctx context.Context, ref string) (v1.Image, error) {
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	sources, err := c.pullSources(r)
	if err != nil {
		return nil, err
	}
	for _, src := range sources {
		img, err := c.imageFrom(ctx, src.ref)
		if err == nil {
			return img, nil
		}
		err = explain(err, "pulling", src.ref.String(), src.ref.Context().RegistryStr(), c.authenticated(src.ref.Context()))
		if !src.mirror {
			return nil, err
		}
		c.warnf("%v; trying the next source", err)
	}
	panic("unreachable: the origin is always the last source")
}

// imageFrom pulls r from where it names: its manifest (choosing the platform's from an index)
// and its config, retried together; layers are read later, through resumable downloads.
func (c *Client) imageFrom(ctx context.Context, r name.Reference) (v1.Image, error) {
	var img v1.Image
	err := c.retry(ctx, "pulling "+r.String(), func(ctx context.Context) error {
		var err error
		img, err = c.fetchImage(ctx, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.resumable(ctx, img, r.Context()), nil
}

// fetchImage fetches the manifest and config of r once.
func (c *Client) fetchImage(ctx context.Context, r name.Reference) (v1.Image, error) {
	desc, err := remote.Get(r, c.remoteOptions(ctx)...)
	if err != nil {
		return nil, err
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		manifest, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		child, ok := choosePlatform(manifest.Manifests, c.platform)
		if !ok {
			return nil, &Error{Op: "pulling", Ref: r.String(), Host: r.Context().RegistryStr(),
				Reason: fmt.Sprintf("no manifest for platform %s (the index has: %s)",
					platformString(c.platform), strings.Join(platformList(manifest.Manifests), ", "))}
		}
		if img, err = idx.Image(child.Digest); err != nil {
			return nil, err
		}
	} else if img, err = desc.Image(); err != nil {
		return nil, err
	}
	// The config is small and read at once (for diffIDs): fetch it here, under the retries.
	if _, err := img.RawConfigFile(); err != nil {
		return nil, err
	}
	return img, nil
}

// Digest returns the digest of the manifest (or index) ref points at, at its origin (mirrors
// may lag behind). It asks with HEAD and falls back to GET for registries that answer HEAD
// without a digest.
func (c *Client) Digest(ctx context.Context, ref string) (v1.Hash, error) {
	r, err := c.resolve(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	var digest v1.Hash
	err = c.retry(ctx, "resolving "+r.String(), func(ctx context.Context) error {
		desc, err := remote.Head(r, c.remoteOptions(ctx)...)
		if err == nil {
			digest = desc.Digest
			return nil
		}
		full, err := remote.Get(r, c.remoteOptions(ctx)...)
		if err != nil {
			return err
		}
		digest = full.Digest
		return nil
	})
	if err != nil {
		return v1.Hash{}, explain(err, "resolving the digest of", r.String(), r.Context().RegistryStr(), c.authenticated(r.Context()))
	}
	return digest, nil
}

// choosePlatform picks the first manifest of an index that suits want.
// Entries without a platform (attestations, artifacts) never match.
func choosePlatform(manifests []v1.Descriptor, want v1.Platform) (v1.Descriptor, bool) {
	for _, m := range manifests {
		if m.Platform != nil && platformMatches(*m.Platform, want) {
			return m, true
		}
	}
	return v1.Descriptor{}, false
}

// platformMatches reports whether an image built for have runs on want.
// OS and architecture must be equal; a variant is compared only when want
// names one, and arm64's "v8" equals no variant at all.
func platformMatches(have, want v1.Platform) bool {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	if want.Variant == "" {
		return true
	}
	hv, wv := have.Variant, want.Variant
	if want.Architecture == "arm64" {
		hv, wv = strings.TrimPrefix(hv, "v8"), strings.TrimPrefix(wv, "v8")
	}
	if hv != wv {
		return false
	}
	return want.OSVersion == "" || have.OSVersion == want.OSVersion
}

// platformString formats p as os/arch[/variant].
func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// platformList lists the platforms of an index's entries, for error messages.
func platformList(manifests []v1.Descriptor) []string {
	var out []string
	for _, m := range manifests {
		if m.Platform != nil {
			out = append(out, platformString(*m.Platform))
		}
	}
	if len(out) == 0 {
		out = append(out, "no platforms")
	}
	return out
}
