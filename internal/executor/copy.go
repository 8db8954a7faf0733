// Package executor carries out one build step against a writable rootfs: COPY and ADD write
// files into it directly, RUN hands a process to the sandbox. It knows Docker's rules for
// sources, destinations, owners and modes; it knows nothing of layers, caches or registries.
package executor

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"

	"github.com/kiln-build/kiln/internal/rootpath"
)

// Owner is a numeric uid and gid.
type Owner struct{ UID, GID int }

// Content is a file given inline (a COPY heredoc).
type Content struct {
	Name string
	Data string
}

// CopySpec is one COPY or ADD from local sources.
type CopySpec struct {
	// SrcRoot is the build context or the rootfs of the stage or image named by --from.
	SrcRoot string
	// FromContext marks SrcRoot as the build context: owners become 0:0 unless Chown is set,
	// Excludes apply, and sources may not point outside it.
	FromContext bool
	// Excludes are the .dockerignore rules (nil for none).
	Excludes *patternmatcher.PatternMatcher
	// Sources are the source paths as written (after variable expansion); wildcards allowed.
	Sources []string
	// Contents are inline files (heredocs), written as Dest/Name or Dest.
	Contents []Content
	// Dest is the absolute destination inside the rootfs. DestIsDir is set when the Dockerfile
	// wrote it with a trailing slash.
	Dest      string
	DestIsDir bool
	// Chown, when set, owns every copied file and every directory the copy creates.
	Chown *Owner
	// Chmod, when set, replaces the permission bits of every copied file and directory.
	Chmod *fs.FileMode
	// ExtractArchives makes local tar archives (plain, gzip, bzip2, xz, zstd) unpack into Dest,
	// as ADD does.
	ExtractArchives bool
	// Instruction names the step in errors ("COPY", "ADD").
	Instruction string
}

// Copy carries out spec against rootfs.
func Copy(ctx context.Context, rootfs string, spec CopySpec) error {
	if spec.Instruction == "" {
		spec.Instruction = "COPY"
	}
	sources, err := ExpandSources(spec)
	if err != nil {
		return err
	}
	if len(sources)+len(spec.Contents) > 1 && !spec.DestIsDir {
		if fi, err := statIn(rootfs, spec.Dest); err != nil || !fi.IsDir() {
			return fmt.Errorf("%s with more than one source file needs a destination directory ending in /: %s", spec.Instruction, spec.Dest)
		}
	}
	c := &copier{ctx: ctx, rootfs: rootfs, spec: spec, links: map[inode]string{}}
	for _, src := range sources {
		if err := c.copySource(src); err != nil {
			return err
		}
	}
	for _, content := range spec.Contents {
		if err := c.writeContent(content); err != nil {
			return err
		}
	}
	return nil
}

// ExpandSources returns the source paths of spec relative to SrcRoot, wildcards expanded and
// .dockerignore applied, checked to exist: exactly what Copy reads (directories recursively).
func ExpandSources(spec CopySpec) ([]string, error) {
	var out []string
	for _, s := range spec.Sources {
		clean := path.Clean("/" + filepath.ToSlash(s))
		if spec.FromContext && escapes(s) {
			return nil, fmt.Errorf("%s %s: forbidden path outside the build context", spec.Instruction, s)
		}
		rel := strings.TrimPrefix(clean, "/")
		if rel == "" {
			rel = "."
		}
		if !hasMeta(rel) {
			p, err := rootpath.Resolve(spec.SrcRoot, rel, true)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", spec.Instruction, s, err)
			}
			if _, err := os.Lstat(p); err != nil {
				return nil, fmt.Errorf("%s %s: %s", spec.Instruction, s, notFound(spec))
			}
			if spec.FromContext && rel != "." && spec.Excludes != nil {
				if ok, _ := spec.Excludes.MatchesOrParentMatches(rel); ok {
					return nil, fmt.Errorf("%s %s: %s (it is excluded by .dockerignore)", spec.Instruction, s, notFound(spec))
				}
			}
			out = append(out, rel)
			continue
		}
		matches, err := glob(spec.SrcRoot, rel)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", spec.Instruction, s, err)
		}
		n := 0
		for _, m := range matches {
			if spec.FromContext && spec.Excludes != nil {
				if ok, _ := spec.Excludes.MatchesOrParentMatches(m); ok {
					continue
				}
			}
			out = append(out, m)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("%s %s: no source files were specified (the pattern matched nothing)", spec.Instruction, s)
		}
	}
	return out, nil
}

func notFound(spec CopySpec) string {
	if spec.FromContext {
		return "no such file or directory in the build context"
	}
	return "no such file or directory in the source stage or image"
}

// escapes reports whether a relative source path climbs above its root.
func escapes(s string) bool {
	if path.IsAbs(filepath.ToSlash(s)) {
		return false
	}
	c := path.Clean(filepath.ToSlash(s))
	return c == ".." || strings.HasPrefix(c, "../")
}

func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// glob matches pattern (relative, slash separated) component by component inside root,
// resolving each directory inside root so a symlink can never lead the match outside it.
func glob(root, pattern string) ([]string, error) {
	dirs := []string{""}
	parts := strings.Split(pattern, "/")
	for i, part := range parts {
		last := i == len(parts)-1
		var next []string
		for _, d := range dirs {
			if !hasMeta(part) {
				next = append(next, path.Join(d, part))
				continue
			}
			host, err := rootpath.Resolve(root, d, true)
			if err != nil {
				return nil, err
			}
			entries, err := os.ReadDir(host)
			if err != nil {
				continue
			}
			for _, e := range entries {
				ok, err := path.Match(part, e.Name())
				if err != nil {
					return nil, fmt.Errorf("bad pattern %q: %w", pattern, err)
				}
				if ok {
					next = append(next, path.Join(d, e.Name()))
				}
			}
		}
		if !last {
			dirs = next
			continue
		}
		var existing []string
		for _, n := range next {
			if host, err := rootpath.Resolve(root, n, false); err == nil {
				if _, err := os.Lstat(host); err == nil {
					existing = append(existing, n)
				}
			}
		}
		return existing, nil
	}
	return nil, nil
}

func statIn(rootfs, p string) (fs.FileInfo, error) {
	host, err := rootpath.Resolve(rootfs, p, true)
	if err != nil {
		return nil, err
	}
	return os.Stat(host)
}
