package registry

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Image resolves ref (a docker reference: "busybox" means
// docker.io/library/busybox:latest) to an image for the client's platform,
// choosing the matching manifest when ref points at an index. Layers are
// fetched lazily, when they are read, under ctx: keep ctx alive while the
// image is in use. A single-platform image is returned whatever its
// platform.
func (c *Client) Image(ctx context.Context, ref string) (v1.Image, error) {
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(r, c.remoteOptions(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("pulling image %s: %w", r, err)
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("pulling image %s: %w", r, err)
		}
		return img, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("pulling image index %s: %w", r, err)
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading image index %s: %w", r, err)
	}
	child, ok := choosePlatform(manifest.Manifests, c.platform)
	if !ok {
		return nil, fmt.Errorf("pulling image %s: no manifest for platform %s (the index has: %s)",
			r, platformString(c.platform), strings.Join(platformList(manifest.Manifests), ", "))
	}
	img, err := idx.Image(child.Digest)
	if err != nil {
		return nil, fmt.Errorf("pulling image %s for platform %s (%s): %w", r, platformString(c.platform), child.Digest, err)
	}
	return img, nil
}

// Digest returns the digest of the manifest (or index) ref points at. It
// asks with HEAD and falls back to GET for registries that answer HEAD
// without a digest.
func (c *Client) Digest(ctx context.Context, ref string) (v1.Hash, error) {
	r, err := c.parse(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	desc, err := remote.Head(r, c.remoteOptions(ctx)...)
	if err == nil {
		return desc.Digest, nil
	}
	full, getErr := remote.Get(r, c.remoteOptions(ctx)...)
	if getErr != nil {
		return v1.Hash{}, fmt.Errorf("resolving digest of %s: %w", r, getErr)
	}
	return full.Digest, nil
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
