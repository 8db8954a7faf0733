package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/registry"
)

// Output is one --output destination.
type Output struct {
	// Type is "oci" (an OCI layout directory, or a tar of one when Dest ends in .tar) or
	// "docker" (a docker-archive tar that `docker load` and `podman load` read).
	Type string
	Dest string
}

// ParseOutput parses a --output value: "type=oci,dest=DIR", "type=docker,dest=FILE.tar",
// or a bare path (an OCI layout directory).
func ParseOutput(s string) (Output, error) {
	if !strings.Contains(s, "=") {
		return Output{Type: "oci", Dest: s}, nil
	}
	var o Output
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.TrimSpace(k) {
		case "type":
			o.Type = v
		case "dest":
			o.Dest = v
		default:
			return o, fmt.Errorf("--output %s: unknown key %q (use type= and dest=)", s, k)
		}
	}
	switch o.Type {
	case "oci", "docker":
	case "":
		return o, fmt.Errorf("--output %s: type= is required (oci or docker)", s)
	default:
		return o, fmt.Errorf("--output %s: unknown type %q (use oci or docker; push with --push)", s, o.Type)
	}
	if o.Dest == "" {
		return o, fmt.Errorf("--output %s: dest= is required", s)
	}
	return o, nil
}

// pushDestinations are the references the image is pushed to: every tag with Push, and every
// destination.
func pushDestinations(req Request) ([]string, error) {
	var refs []string
	if req.Push {
		if len(req.Tags) == 0 && len(req.Destinations) == 0 {
			return nil, fmt.Errorf("--push needs at least one -t name to push to")
		}
		refs = append(refs, req.Tags...)
	}
	for _, d := range req.Destinations {
		if !contains(refs, d) {
			refs = append(refs, d)
		}
	}
	return refs, nil
}

func writeOutputs(ctx context.Context, req Request, reg *registry.Client, img v1.Image, res *Result) error {
	for _, o := range req.Outputs {
		var err error
		switch o.Type {
		case "oci":
			err = writeOCI(img, o.Dest, res.References)
		case "docker":
			err = writeDockerArchive(img, o.Dest, res.References)
		}
		if err != nil {
			return fmt.Errorf("writing --output type=%s,dest=%s: %w", o.Type, o.Dest, err)
		}
	}
	if refs, _ := pushDestinations(req); len(refs) > 0 {
		fmt.Fprintf(req.Progress, "pushing %s\n", strings.Join(refs, ", "))
		start := time.Now()
		if err := reg.Push(ctx, img, refs...); err != nil {
			return &StageError{Stage: StagePush, Err: err}
		}
		res.Stages = append(res.Stages, Stage{Name: StagePush, Start: start, Duration: time.Since(start)})
	}
	if req.DigestFile != "" {
		if err := os.WriteFile(req.DigestFile, []byte(res.Digest.String()), 0o644); err != nil {
			return fmt.Errorf("writing --digest-file: %w", err)
		}
	}
	if req.MetadataFile != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(req.MetadataFile, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing --metadata-file: %w", err)
		}
	}
	return nil
}

// writeOCI writes img as an OCI image layout at dest (a directory), or a tar of one when dest
// ends in .tar. The image's names become ref.name annotations (the tag part, as skopeo's oci:
// transport expects). A new layout or tar is written beside dest and renamed into place when
// complete, so a failed build leaves nothing there; an existing layout gets the image's blobs,
// then its index entry.
func writeOCI(img v1.Image, dest string, refs []string) error {
	dir := dest
	_, statErr := os.Stat(dest)
	fresh := strings.HasSuffix(dest, ".tar") || errors.Is(statErr, os.ErrNotExist)
	if fresh {
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dest), ".kiln-oci-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	annotations := map[string]string{}
	if len(refs) > 0 {
		if t, err := name.NewTag(refs[0]); err == nil {
			annotations["org.opencontainers.image.ref.name"] = t.TagStr()
		}
	}
	if err := p.ReplaceImage(img, matchRefName(annotations), layout.WithAnnotations(annotations)); err != nil {
		return err
	}
	switch {
	case strings.HasSuffix(dest, ".tar"):
		return tarDir(dir, dest)
	case fresh:
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		return os.Rename(dir, dest)
	}
	return nil
}

// matchRefName matches index entries with the same ref.name, so a rebuild replaces its tag.
func matchRefName(a map[string]string) func(v1.Descriptor) bool {
	want := a["org.opencontainers.image.ref.name"]
	return func(d v1.Descriptor) bool {
		return want != "" && d.Annotations["org.opencontainers.image.ref.name"] == want
	}
}

func writeDockerArchive(img v1.Image, dest string, refs []string) error {
	tagName := "localhost/kiln-image:latest"
	if len(refs) > 0 {
		tagName = refs[0]
	}
	tag, err := name.NewTag(tagName)
	if err != nil {
		return err
	}
	tmp := dest + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dest)
}

// tarDir writes the files under dir into a tar at dest (atomically).
func tarDir(dir, dest string) error {
	tmp := dest + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = archive.WriteDir(f, dir, true)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dest)
}
