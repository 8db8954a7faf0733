package build

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// inputs are the Dockerfile and ignore rules of a build, read before anything else happens.
type inputs struct {
	dockerfile     io.Reader
	dockerfileName string
	excludes       *patternmatcher.PatternMatcher
}

// loadInputs reads the Dockerfile (from the context, a path or stdin) and the ignore file:
// <Dockerfile>.dockerignore next to the Dockerfile wins over .dockerignore (or .containerignore)
// in the context, as with Docker and buildah.
func loadInputs(req Request) (*inputs, error) {
	fi, err := os.Stat(req.ContextDir)
	if err == nil && !filepath.IsAbs(req.ContextDir) {
		return nil, fmt.Errorf("internal error: build context %s is not an absolute path", req.ContextDir)
	}
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", req.ContextDir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s is not a directory", req.ContextDir)
	}
	in := &inputs{}
	path := req.Dockerfile
	switch path {
	case "-":
		if req.Stdin == nil {
			return nil, errors.New("-f -: no standard input to read the Dockerfile from")
		}
		data, err := io.ReadAll(req.Stdin)
		if err != nil {
			return nil, fmt.Errorf("reading the Dockerfile from standard input: %w", err)
		}
		in.dockerfile, in.dockerfileName = bytes.NewReader(data), "<stdin>"
	case "":
		path = filepath.Join(req.ContextDir, "Dockerfile")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(filepath.Join(req.ContextDir, "Containerfile")); err == nil {
				path = filepath.Join(req.ContextDir, "Containerfile")
			}
		}
		fallthrough
	default:
		data, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("no Dockerfile at %s (use -f to name one)", path)
			}
			return nil, fmt.Errorf("reading the Dockerfile: %w", err)
		}
		in.dockerfile, in.dockerfileName = bytes.NewReader(data), displayName(req.ContextDir, path)
	}
	candidates := []string{}
	if path != "-" {
		candidates = append(candidates, path+".dockerignore", path+".containerignore")
	}
	candidates = append(candidates, filepath.Join(req.ContextDir, ".dockerignore"), filepath.Join(req.ContextDir, ".containerignore"))
	for _, c := range candidates {
		f, err := os.Open(c)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", c, err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", c, err)
		}
		if in.excludes, err = patternmatcher.New(patterns); err != nil {
			return nil, fmt.Errorf("%s: %w", c, err)
		}
		break
	}
	return in, nil
}

// displayName shows the Dockerfile relative to the context when it lies inside it.
func displayName(contextDir, path string) string {
	if rel, err := filepath.Rel(contextDir, path); err == nil && filepath.IsLocal(rel) {
		return rel
	}
	return path
}
