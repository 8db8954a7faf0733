package solver

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/internal/executor"
)

// copy runs COPY: from the context, an earlier stage or an image.
func (st *stageState) copy(ctx context.Context, c *instructions.CopyCommand, text string) error {
	spec, err := st.copySpec("COPY", c.SourcesAndDest, c.Chmod)
	if err != nil {
		return err
	}
	if c.Parents {
		return fmt.Errorf("COPY --parents is not supported")
	}
	if len(c.ExcludePatterns) > 0 {
		return fmt.Errorf("COPY --exclude is not supported")
	}
	var sourceKey string
	var open func(context.Context) (string, func(), error)
	if c.From != "" {
		from, err := st.s.cfg.Plan.ExpandGlobal(c.From)
		if err != nil {
			return fmt.Errorf("expanding --from=%s: %w", c.From, err)
		}
		if sourceKey, open, err = st.fromSource(ctx, from); err != nil {
			return err
		}
		spec.FromContext, spec.Excludes = false, nil
	} else if sourceKey, err = contentKey(spec, false); err != nil {
		return err
	}
	st.s.out.printf("%s %s\n", st.s.cfg.Plan.Describe(st.index), text)
	key := st.stepKey(false, text, sourceKey, contentsKey(spec.Contents), spec.Dest)
	return st.changeFS(ctx, text, key, func(root string) error {
		if open != nil {
			src, release, err := open(ctx)
			if err != nil {
				return err
			}
			defer release()
			spec.SrcRoot = src
		}
		if err := st.resolveChown(root, c.Chown, &spec); err != nil {
			return err
		}
		return executor.Copy(ctx, root, spec)
	})
}

// add runs ADD: local files (tar archives extracted) and http(s) URLs.
func (st *stageState) add(ctx context.Context, c *instructions.AddCommand, text string) error {
	spec, err := st.copySpec("ADD", c.SourcesAndDest, c.Chmod)
	if err != nil {
		return err
	}
	spec.ExtractArchives = c.Unpack == nil || *c.Unpack
	var local []string
	var fetched []executor.CopySpec
	for _, src := range spec.Sources {
		if !isURL(src) {
			if c.Checksum != "" {
				return fmt.Errorf("--checksum works only with http(s) sources")
			}
			local = append(local, src)
			continue
		}
		if strings.HasPrefix(src, "git@") || strings.HasSuffix(src, ".git") {
			return fmt.Errorf("ADD of git repositories is not supported: %s", src)
		}
		tmp, err := st.s.cfg.Store.TempDir("add-")
		if err != nil {
			return err
		}
		st.s.out.printf("%s fetching %s\n", st.s.cfg.Plan.Describe(st.index), src)
		dir, name, err := executor.Fetch(ctx, executor.FetchSpec{URL: src, Checksum: c.Checksum, TempDir: tmp})
		if err != nil {
			return err
		}
		f := spec
		f.SrcRoot, f.Sources, f.FromContext, f.Excludes, f.ExtractArchives = dir, []string{name}, false, nil, false
		f.Contents = nil
		fetched = append(fetched, f)
	}
	spec.Sources = local
	if len(spec.Sources)+len(fetched)+len(spec.Contents) > 1 && !spec.DestIsDir {
		return fmt.Errorf("ADD with more than one source file needs a destination directory ending in /: %s", spec.Dest)
	}
	st.s.out.printf("%s %s\n", st.s.cfg.Plan.Describe(st.index), text)
	key := ""
	if len(fetched) == 0 || c.Checksum != "" {
		// A URL without --checksum may change under the same name: always fetch and run it.
		sourceKey, err := contentKey(spec, false)
		if err != nil {
			return err
		}
		key = st.stepKey(false, text, sourceKey, contentsKey(spec.Contents), spec.Dest, c.Checksum)
	}
	return st.changeFS(ctx, text, key, func(root string) error {
		if err := st.resolveChown(root, c.Chown, &spec); err != nil {
			return err
		}
		if len(spec.Sources) > 0 || len(spec.Contents) > 0 {
			if err := executor.Copy(ctx, root, spec); err != nil {
				return err
			}
		}
		for _, f := range fetched {
			f.Chown = spec.Chown
			if err := executor.Copy(ctx, root, f); err != nil {
				return err
			}
		}
		return nil
	})
}

// copySpec builds the parts of a CopySpec common to COPY and ADD.
func (st *stageState) copySpec(instruction string, sd instructions.SourcesAndDest, chmod string) (executor.CopySpec, error) {
	dest := sd.DestPath
	isDir := strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.") || dest == "."
	if !path.IsAbs(dest) {
		dest = path.Join(st.currentDir(), dest)
	}
	spec := executor.CopySpec{
		SrcRoot:     st.s.cfg.Context,
		FromContext: true,
		Excludes:    st.s.cfg.Excludes,
		Sources:     sd.SourcePaths,
		Dest:        path.Clean(dest),
		DestIsDir:   isDir,
		Instruction: instruction,
	}
	for _, sc := range sd.SourceContents {
		spec.Contents = append(spec.Contents, executor.Content{Name: path.Base(sc.Path), Data: sc.Data})
	}
	if chmod != "" {
		m, err := strconv.ParseUint(chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return spec, fmt.Errorf("invalid --chmod=%s: give octal permission bits such as 0755", chmod)
		}
		mode := fs.FileMode(m) & fs.ModePerm
		spec.Chmod = &mode
	}
	return spec, nil
}

// resolveChown resolves --chown against the rootfs being written (names from its /etc/passwd).
func (st *stageState) resolveChown(root, chown string, spec *executor.CopySpec) error {
	if chown == "" {
		return nil
	}
	o, err := executor.ResolveOwner(root, chown)
	if err != nil {
		return err
	}
	spec.Chown = &o
	return nil
}

// sourceRoot returns a readable rootfs for --from (an earlier stage or an image), its cache
// key, and a function that releases it.
func (st *stageState) sourceRoot(ctx context.Context, from string) (root, key string, release func(), err error) {
	key, open, err := st.fromSource(ctx, from)
	if err != nil {
		return "", "", nil, err
	}
	root, release, err = open(ctx)
	return root, key, release, err
}

// fromSource resolves --from (an earlier stage or an image) to its cache key and a function
// that opens a read-only view of its rootfs. The view is opened only when a step runs, so a
// cache hit never fetches the source's layers.
func (st *stageState) fromSource(ctx context.Context, from string) (key string, open func(context.Context) (string, func(), error), err error) {
	plan := st.s.cfg.Plan
	var dirs func(context.Context) ([]string, error)
	if i, ok := plan.StageByName(from, st.index); ok {
		src, err := st.s.waitStage(ctx, i)
		if err != nil {
			return "", nil, err
		}
		key, dirs = src.key, src.rootfs
	} else {
		img, err := st.s.cfg.Bases.Resolve(ctx, from, "")
		if err != nil {
			return "", nil, fmt.Errorf("--from=%s: %w", from, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return "", nil, fmt.Errorf("--from=%s: %w", from, err)
		}
		key = keyOf("image", digest.String())
		dirs = func(ctx context.Context) ([]string, error) {
			_, d, _, err := st.s.unpack(ctx, img)
			return d, err
		}
	}
	open = func(ctx context.Context) (string, func(), error) {
		d, err := dirs(ctx)
		if err != nil {
			return "", nil, fmt.Errorf("--from=%s: %w", from, err)
		}
		view, err := st.s.cfg.Snapshotter.Prepare(ctx, d)
		if err != nil {
			return "", nil, fmt.Errorf("--from=%s: preparing a view: %w", from, err)
		}
		return view.Root(), func() { _ = view.Release() }, nil
	}
	return key, open, nil
}

// contentsKey hashes inline (heredoc) files.
func contentsKey(contents []executor.Content) string {
	var parts []string
	for _, c := range contents {
		parts = append(parts, c.Name, c.Data)
	}
	return keyOf(parts...)
}

func isURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
