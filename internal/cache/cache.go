// Package cache moves kiln's build cache between builds that do not share a store: a fresh
// CI pod imports it from a registry repository or an OCI layout directory (a mounted volume),
// and exports it back after the build.
//
// A cache is one OCI image manifest. Its config blob is the index: every step's cache key
// with what the step produced (a layer descriptor and diffID, or nothing) and when. Its layers
// are those layer blobs, so registries keep them and serve them like any image's. Finding
// which steps hit therefore costs two requests (manifest, index), whatever the number of
// steps, and a hit fetches a layer only when the build needs its content.
package cache

import (
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/store"
)

// IndexMediaType is the media type of the index blob (the manifest's config).
const IndexMediaType types.MediaType = "application/vnd.kiln.cache.index.v1+json"

// index is the cache's config blob.
type index struct {
	Version int                         `json:"version"`
	Steps   map[string]store.CachedStep `json:"steps"`
}

// parseIndex reads an index blob.
func parseIndex(data []byte) (map[string]store.CachedStep, error) {
	var idx index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("reading the cache index: %w", err)
	}
	if idx.Version != 1 {
		return nil, fmt.Errorf("reading the cache index: version %d, kiln reads version 1", idx.Version)
	}
	return idx.Steps, nil
}

// Mode says which steps an export holds.
type Mode string

// The export modes, as BuildKit names them.
const (
	// Min exports the steps of the final stage (and the stages it is built FROM).
	Min Mode = "min"
	// Max also exports the steps of every other stage.
	Max Mode = "max"
)

// Spec is a parsed --cache-from or --cache-to value.
type Spec struct {
	// Type is "registry" or "local".
	Type string
	// Ref is the registry reference (type=registry).
	Ref string
	// Dir is the OCI layout directory (type=local: src= for imports, dest= for exports).
	Dir string
	// Mode is the export mode (--cache-to only).
	Mode Mode
}

// String renders the spec for messages.
func (s Spec) String() string {
	if s.Type == "registry" {
		return "registry " + s.Ref
	}
	return "directory " + s.Dir
}

// ParseSpec parses a --cache-from (export false) or --cache-to (export true) value:
// type=registry,ref=REPO[:TAG][,mode=min|max] or type=local,src=DIR / dest=DIR[,mode=...].
// A bare reference is type=registry,ref=REF, as with buildah's --cache-from.
func ParseSpec(s string, export bool) (Spec, error) {
	flag := "--cache-from"
	if export {
		flag = "--cache-to"
	}
	if !strings.Contains(s, "=") {
		s = "type=registry,ref=" + s
	}
	spec := Spec{Mode: Min}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k = strings.TrimSpace(k); k {
		case "type":
			spec.Type = v
		case "ref":
			spec.Ref = v
		case "src":
			if export {
				return spec, fmt.Errorf("%s %s: src= is for --cache-from; use dest=", flag, s)
			}
			spec.Dir = v
		case "dest":
			if !export {
				return spec, fmt.Errorf("%s %s: dest= is for --cache-to; use src=", flag, s)
			}
			spec.Dir = v
		case "mode":
			if !export {
				return spec, fmt.Errorf("%s %s: mode= is for --cache-to", flag, s)
			}
			spec.Mode = Mode(v)
			if spec.Mode != Min && spec.Mode != Max {
				return spec, fmt.Errorf("%s %s: mode must be min or max", flag, s)
			}
		default:
			return spec, fmt.Errorf("%s %s: unknown key %q", flag, s, k)
		}
	}
	switch spec.Type {
	case "registry":
		if spec.Ref == "" {
			return spec, fmt.Errorf("%s %s: type=registry needs ref=REPOSITORY", flag, s)
		}
	case "local":
		if spec.Dir == "" {
			return spec, fmt.Errorf("%s %s: type=local needs %s=DIR", flag, s, map[bool]string{false: "src", true: "dest"}[export])
		}
	default:
		return spec, fmt.Errorf("%s %s: type must be registry or local", flag, s)
	}
	return spec, nil
}

// descriptorKey orders layers and names them in errors.
func descriptorKey(d v1.Descriptor) string { return d.Digest.String() }
