package store

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// refNameAnnotation carries an image's name on its index.json entry.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// NormalizeLocalName turns a name given for a local image into its full
// form, as podman and buildah do: a name whose first component is not a
// registry (no "." or ":" and not "localhost") goes under localhost/, and a
// missing tag is "latest". So "app" is "localhost/app:latest", "x/y:1" is
// "localhost/x/y:1", "registry:5000/x/y" is "registry:5000/x/y:latest" and
// "docker.io/library/busybox" keeps its registry. A digest reference keeps its
// digest and gets no tag.
func NormalizeLocalName(s string) (string, error) {
	if s == "" || strings.HasPrefix(s, "sha256:") {
		return "", fmt.Errorf("normalizing image name %q: not a name", s)
	}
	ref, err := name.ParseReference(s, name.WithDefaultRegistry("localhost"))
	if err != nil {
		return "", fmt.Errorf("normalizing image name %q: %w", s, err)
	}
	repo := ref.Context()
	registry := repo.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	full := registry + "/" + repo.RepositoryStr()
	switch r := ref.(type) {
	case name.Digest:
		return full + "@" + r.DigestStr(), nil
	case name.Tag:
		return full + ":" + r.TagStr(), nil
	}
	return "", fmt.Errorf("normalizing image name %q: unknown reference kind", s)
}
