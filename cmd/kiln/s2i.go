package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/executor"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/s2i"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/store"
)

// newS2ICommand is `kiln s2i`: Source-to-Image builds, done by kiln's own planner.
func newS2ICommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "s2i",
		Short: "Build images from application source with Source-to-Image (s2i) builder images",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newS2IBuildCommand())
	return cmd
}

// s2iFlags are the flags of `kiln s2i build`: those it shares with `kiln build`, named alike,
// and s2i's own, named as s2i names them.
type s2iFlags struct {
	commonFlags
	driver, digestFile, metadataFile, resultFile     string
	destinations                                     []string
	pull, push, quiet, noCache, skipPushCheck, fsync bool

	env, injections, runtimeArtifacts                                   []string
	envFile, scriptsURL, assembleUser, contextDir, exclude, allowedUIDs string
	runtimeImage, asDockerfile                                          string
	incremental                                                         bool
}

func newS2IBuildCommand() *cobra.Command {
	var f s2iFlags
	cmd := &cobra.Command{
		Use:   "build [flags] SOURCE BUILDER_IMAGE [TAG]",
		Short: "Build an application image from SOURCE (a directory, or a git URL[#REF]) with an s2i builder image",
		Long: `Build an application image the way OpenShift's s2i does, without a daemon: the builder
image's assemble script builds SOURCE, and its run script becomes the image's command.

SOURCE is a directory or a git repository URL (https://, ssh://, git@host:path), optionally
followed by #BRANCH, #TAG or #COMMIT. With --as-dockerfile, kiln writes the equivalent
Dockerfile and its build context instead of building.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			tag := ""
			if len(args) == 3 {
				tag = args[2]
			}
			in, err := f.inputs(args[0], args[1], tag)
			if err != nil {
				return err
			}
			req, err := f.request(tag)
			if err != nil {
				return err
			}
			if f.asDockerfile == "" {
				mapping, err := sandbox.ReexecInUserNamespace()
				if err != nil {
					return err
				}
				req.SquashOwners = mapping.Mode == sandbox.ModeSingle
			}
			req.Stdin = os.Stdin
			req.Progress = os.Stderr
			if f.quiet {
				req.Progress = io.Discard
			}
			in.resultFile = f.resultFile
			err = runS2I(cmd.Context(), in, req)
			var runErr *executor.RunError
			if f.quiet && errors.As(err, &runErr) {
				// The step's output was not streamed: show how it ended.
				for _, l := range runErr.Tail {
					fmt.Fprintln(os.Stderr, "  | "+l)
				}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable KEY=VALUE for assemble and the image (repeatable; overrides .s2i/environment)")
	fl.StringVarP(&f.envFile, "environment-file", "E", "", "read KEY=VALUE lines for assemble and the image from this file")
	fl.StringVarP(&f.scriptsURL, "scripts-url", "s", "", "where the s2i scripts are: image://DIR (in the builder), file://DIR or http(s)://URL")
	fl.BoolVar(&f.incremental, "incremental", false, "restore the artifacts of the previous TAG image (its save-artifacts script) before assemble")
	fl.StringVar(&f.assembleUser, "assemble-user", "", "run assemble as this user (default: the builder's io.openshift.s2i.assemble-user label, else its USER)")
	fl.StringVar(&f.allowedUIDs, "allowed-uids", "", "refuse builders whose assemble user (and runtime images whose USER) is not a numeric uid in these ranges, e.g. 1- (not root) or 1000-2000,5000")
	fl.StringVar(&f.contextDir, "context-dir", "", "build this directory of the source")
	fl.StringVar(&f.exclude, "exclude", s2i.DefaultExclude, "leave out source paths matching this regular expression (\"\" leaves out nothing)")
	fl.StringArrayVarP(&f.injections, "inject", "i", nil, "make SRC (a file or directory here) visible at DEST while assemble runs, in no layer: SRC:DEST (repeatable)")
	fl.StringVar(&f.runtimeImage, "runtime-image", "", "copy the assembled artifacts into this image, whose run script becomes the command")
	fl.StringArrayVarP(&f.runtimeArtifacts, "runtime-artifact", "a", nil, "with --runtime-image: copy SRC (absolute, in the builder) into directory DEST of the runtime image: SRC[:DEST] (repeatable)")
	fl.StringVar(&f.asDockerfile, "as-dockerfile", "", "write the equivalent Dockerfile to this file, and its build context next to it, instead of building")

	fl.StringVar(&f.network, "network", "host", "network of the assemble step: host or none")
	fl.BoolVar(&f.pull, "pull", false, "pull the builder and runtime images even when the local store has them")
	fl.BoolVar(&f.noCache, "no-cache", false, "run every step, even those the local cache holds")
	f.commonFlags.register(fl)
	fl.BoolVar(&f.push, "push", false, "push the image to TAG's registry")
	fl.StringArrayVar(&f.destinations, "destination", nil, "push the image to this reference (repeatable; implies pushing it)")
	fl.BoolVar(&f.skipPushCheck, "skip-push-check", false, "do not check push access to the destinations before building")
	fl.StringVar(&f.digestFile, "digest-file", "", "write the image digest to this file")
	fl.StringVar(&f.metadataFile, "metadata-file", "", "write JSON metadata (digest, references, size, config digest) to this file")
	fl.StringVar(&f.resultFile, "result-file", "", "write the outcome, success or failure, as a kiln.dev BuildResult (JSON) to this file (build pods use /dev/termination-log)")
	fl.StringVar(&f.driver, "storage-driver", "", "snapshotter: overlay or copy (default: overlay where it works)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only the image digest")
	fl.BoolVar(&f.fsync, "fsync", false, "let assemble really fsync (by default fsync is a no-op inside RUN)")
	return cmd
}

// s2iInputs are the checked arguments and s2i flags of one `kiln s2i build`.
type s2iInputs struct {
	// source is the directory, or gitURI (at gitRef) the repository to clone.
	source, gitURI, gitRef string
	builder, runtime       string
	// opts holds the options that come from flags; runS2I adds the images and the source.
	opts         s2i.Options
	incremental  bool
	asDockerfile string
	// resultFile receives the outcome as a BuildResult (--result-file).
	resultFile string
	// notes are reported once the build runs (not before kiln re-executes itself).
	notes []string
}

// inputs checks the arguments and s2i's own flags before anything is fetched or built.
func (f *s2iFlags) inputs(src, builder, tag string) (*s2iInputs, error) {
	in := &s2iInputs{builder: builder, runtime: f.runtimeImage, incremental: f.incremental}
	for _, ref := range []string{builder, tag, f.runtimeImage} {
		if ref == "" {
			continue
		}
		if _, err := name.ParseReference(ref); err != nil {
			return nil, fmt.Errorf("image reference %q: %w", ref, err)
		}
	}
	if s2i.IsGitURL(src) {
		in.gitURI, in.gitRef = s2i.SplitGitRef(src)
	} else {
		abs, err := filepath.Abs(strings.TrimPrefix(src, "file://"))
		if err != nil {
			return nil, fmt.Errorf("SOURCE %s: %w", src, err)
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			if err == nil {
				err = errors.New("not a directory")
			}
			return nil, fmt.Errorf("SOURCE %s: give a directory or a git URL (%v)", src, err)
		}
		in.source = abs
	}
	o := &in.opts
	o.Tag, o.ScriptsURL, o.AssembleUser, o.ContextDir = tag, f.scriptsURL, f.assembleUser, f.contextDir
	if f.allowedUIDs != "" {
		rs, err := s2i.ParseUIDRanges(f.allowedUIDs)
		if err != nil {
			return nil, err
		}
		o.AllowedUIDs = rs
	}
	if f.scriptsURL != "" {
		if err := s2i.ParseScriptsURL(f.scriptsURL); err != nil {
			return nil, err
		}
	}
	if f.envFile != "" {
		vars, notes, err := s2i.ReadEnvFile(f.envFile)
		if err != nil {
			return nil, fmt.Errorf("--environment-file: %w", err)
		}
		in.notes = append(in.notes, notes...)
		o.Env = vars
	}
	for _, kv := range f.env {
		ev, err := s2i.ParseEnvFlag(kv)
		if err != nil {
			return nil, err
		}
		o.Env = append(o.Env, ev)
	}
	if f.exclude != "" {
		re, err := regexp.Compile(f.exclude)
		if err != nil {
			return nil, fmt.Errorf("--exclude %q: %w", f.exclude, err)
		}
		o.Exclude = re
	}
	for _, v := range f.injections {
		m := s2i.ParseMapping(v)
		if m.Source == "" || m.Dest == "" {
			return nil, fmt.Errorf("--inject %q: use SRC:DEST", v)
		}
		abs, err := filepath.Abs(m.Source)
		if err != nil {
			return nil, fmt.Errorf("--inject %s: %w", v, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("--inject %s: %w", v, err)
		}
		o.Injections = append(o.Injections, s2i.Mapping{Source: abs, Dest: m.Dest})
	}
	if len(f.runtimeArtifacts) > 0 && f.runtimeImage == "" {
		return nil, errors.New("--runtime-artifact needs --runtime-image")
	}
	for _, v := range f.runtimeArtifacts {
		o.RuntimeArtifacts = append(o.RuntimeArtifacts, s2i.ParseMapping(v))
	}
	if f.incremental && f.runtimeImage != "" {
		return nil, errors.New("--incremental and --runtime-image cannot be combined (s2i does not allow it either)")
	}
	if f.asDockerfile != "" {
		if f.push || len(f.destinations) > 0 || len(f.outputs) > 0 {
			return nil, errors.New("--as-dockerfile writes a Dockerfile and builds nothing: --push, --destination and --output do not apply")
		}
		abs, err := filepath.Abs(f.asDockerfile)
		if err != nil {
			return nil, fmt.Errorf("--as-dockerfile %s: %w", f.asDockerfile, err)
		}
		in.asDockerfile = abs
	}
	return in, nil
}

// request is the build.Request of the flags shared with `kiln build`; runS2I sets the context
// and the Dockerfile.
func (f *s2iFlags) request(tag string) (build.Request, error) {
	req := build.Request{
		Network: f.network, Pull: f.pull, Push: f.push, NoCache: f.noCache, DigestFile: f.digestFile,
		MetadataFile: f.metadataFile, StoreRoot: f.root, StorageDriver: f.driver, Fsync: f.fsync,
		Destinations: f.destinations, SkipPushCheck: f.skipPushCheck,
	}
	if tag != "" {
		req.Tags = []string{tag}
	}
	if err := f.apply(&req); err != nil {
		return req, err
	}
	if req.Push && len(req.Tags) == 0 && len(req.Destinations) == 0 {
		return req, errors.New("--push needs a TAG to push to")
	}
	return req, nil
}

// runS2I fetches the source, reads the images' configurations, generates the Dockerfile and
// its context, and builds it (or, with --as-dockerfile, leaves them for the user).
func runS2I(ctx context.Context, in *s2iInputs, req build.Request) error {
	start := time.Now()
	out := req.Progress
	for _, n := range in.notes {
		fmt.Fprintf(out, "s2i: note: %s\n", n)
	}
	st, err := store.Open(req.StoreRoot)
	if err != nil {
		return fmt.Errorf("opening the store %s: %w", req.StoreRoot, err)
	}
	defer st.Close()
	reg, err := registry.New(append([]registry.Option{
		registry.WithPlatform(v1.Platform{OS: "linux", Architecture: hostArch()}),
		registry.WithUserAgent("kiln"), registry.WithWarnings(out),
	}, req.Registry...)...)
	if err != nil {
		return err
	}
	o := in.opts
	if err := s2iSource(ctx, in, st, &o, out); err != nil {
		return err
	}
	if o.Builder, err = s2iImage(ctx, st, reg, in.builder, req.Pull, "the builder image"); err != nil {
		return err
	}
	if in.runtime != "" {
		if o.Runtime, err = s2iImage(ctx, st, reg, in.runtime, req.Pull, "the runtime image"); err != nil {
			return err
		}
	}
	if in.incremental {
		if o.Tag == "" {
			fmt.Fprintln(out, "s2i: --incremental without a TAG: there is no previous image; building from scratch")
		} else if _, err := s2iPrevious(ctx, st, reg, o.Tag); err != nil {
			fmt.Fprintf(out, "s2i: no previous image to take artifacts from (%v); building from scratch\n", err)
		} else {
			o.Previous = o.Tag
		}
	}
	dir, file := filepath.Split(in.asDockerfile)
	if in.asDockerfile == "" {
		if dir, err = st.TempDir("s2i-context-"); err != nil {
			return err
		}
		file = "Dockerfile"
	}
	plan, err := s2i.Generate(ctx, o, dir, file)
	if err != nil {
		return err
	}
	reportS2IPlan(out, plan, o.Previous)
	if in.asDockerfile != "" {
		if len(o.Injections) > 0 {
			fmt.Fprintf(os.Stderr, "s2i: warning: the --inject files are copied into %s: remove them once built\n",
				filepath.Join(plan.ContextDir, "injections"))
		}
		fmt.Fprintf(os.Stderr, "wrote %s with its build context in %s; build it with: kiln build -f %s %s\n",
			plan.Dockerfile, plan.ContextDir, plan.Dockerfile, plan.ContextDir)
		return nil
	}
	req.ContextDir, req.Dockerfile = plan.ContextDir, plan.Dockerfile
	res, err := build.Build(ctx, req)
	if in.resultFile != "" {
		if werr := writeResult(in.resultFile, req, res, err); werr != nil {
			fmt.Fprintf(os.Stderr, "kiln: warning: %v\n", werr)
		}
	}
	if err != nil {
		return fmt.Errorf("%w (the Dockerfile is the one kiln generated: --as-dockerfile FILE writes it out)", err)
	}
	if req.Progress != io.Discard {
		refs := strings.Join(res.References, ", ")
		if refs == "" {
			refs = "an unnamed image"
		}
		fmt.Fprintf(out, "built %s in %s\n", refs, time.Since(start).Round(time.Millisecond))
	}
	fmt.Println(res.Digest)
	return nil
}

// s2iSource fetches the source into a directory and fills the options about it: a git clone
// into the store's temporary space, or the directory given (with its git commit, if any).
func s2iSource(ctx context.Context, in *s2iInputs, st *store.Store, o *s2i.Options, out io.Writer) error {
	if in.gitURI == "" {
		o.SourceDir, o.SourceLocation = in.source, in.source
		commit, origin, err := s2i.LocalGitInfo(in.source)
		if err != nil {
			fmt.Fprintf(out, "s2i: warning: %v; the image gets no commit labels\n", err)
			return nil
		}
		o.Commit = commit
		if origin != "" {
			o.SourceLocation = origin
		}
		return nil
	}
	dir, err := st.TempDir("s2i-source-")
	if err != nil {
		return err
	}
	location := s2i.RedactURL(in.gitURI)
	fmt.Fprintf(out, "s2i: cloning %s\n", location)
	commit, err := source.Clone(ctx, source.Git{URI: in.gitURI, Ref: in.gitRef}, dir, out)
	if err != nil {
		return fmt.Errorf("fetching the source: %w", err)
	}
	fmt.Fprintf(out, "s2i: cloned %s at %s\n", location, commit.ID)
	o.SourceDir, o.SourceLocation = dir, location
	o.Commit = s2i.NewCommit(commit.ID, in.gitRef, commit.AuthorName, commit.AuthorEmail, commit.When, commit.Message)
	return nil
}

// s2iImage reads the configuration of image ref the way FROM resolves it in `kiln build`:
// the local store first (unless pull), then the registry.
func s2iImage(ctx context.Context, st *store.Store, reg *registry.Client, ref string, pull bool, what string) (s2i.Image, error) {
	img, err := s2iResolve(ctx, st, reg, ref, pull)
	if err != nil {
		return s2i.Image{}, fmt.Errorf("reading %s %s: %w", what, ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return s2i.Image{}, fmt.Errorf("reading the configuration of %s %s: %w", what, ref, err)
	}
	return s2i.Image{Ref: ref, Config: cfg}, nil
}

// s2iPrevious reads the previous image of an incremental build. A TAG without a registry
// names an image of the local store only (kiln build stores it as localhost/NAME): it is not
// looked for on Docker Hub.
func s2iPrevious(ctx context.Context, st *store.Store, reg *registry.Client, tag string) (v1.Image, error) {
	local, err := store.NormalizeLocalName(tag)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(local, "localhost/") {
		return s2iResolve(ctx, st, reg, local, false)
	}
	return s2iResolve(ctx, st, reg, tag, false)
}

func s2iResolve(ctx context.Context, st *store.Store, reg *registry.Client, ref string, pull bool) (v1.Image, error) {
	// Names under localhost/ (without a port) and digests exist only in the local store.
	localOnly := strings.HasPrefix(ref, "sha256:") || strings.HasPrefix(ref, "localhost/")
	if !pull || localOnly {
		for _, c := range s2iLocalNames(ref) {
			img, err := st.Image(c)
			if err == nil {
				return img, nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("looking it up in the local store: %w", err)
			}
		}
	}
	if localOnly {
		return nil, errors.New("not found in the local store")
	}
	return reg.Image(ctx, ref)
}

// s2iLocalNames are the names ref may have in the local store: localhost/NAME for short
// names built here, and the registry's full name.
func s2iLocalNames(ref string) []string {
	if strings.HasPrefix(ref, "sha256:") {
		return []string{ref}
	}
	var out []string
	if n, err := store.NormalizeLocalName(ref); err == nil {
		out = append(out, n)
	}
	if full, err := name.ParseReference(ref); err == nil && (len(out) == 0 || out[0] != full.Name()) {
		out = append(out, full.Name())
	}
	return out
}

// reportS2IPlan tells the user where the scripts came from and what the generator decided.
func reportS2IPlan(out io.Writer, plan *s2i.Plan, previous string) {
	for _, s := range plan.Scripts {
		fmt.Fprintf(out, "s2i: %s script from %s (%s)\n", s.Name, s.Origin, s.URL)
	}
	if plan.Incremental {
		fmt.Fprintf(out, "s2i: incremental build: restoring the artifacts of %s\n", previous)
	}
	if n := len(plan.Excluded); n > 0 {
		fmt.Fprintf(out, "s2i: left %d source path(s) out (--exclude, .s2iignore): %s\n", n, s2iSample(plan.Excluded))
	}
	if n := len(plan.Skipped); n > 0 {
		fmt.Fprintf(out, "s2i: warning: skipped %d special file(s) (sockets, fifos, devices): %s\n", n, s2iSample(plan.Skipped))
	}
	for _, n := range plan.Notes {
		fmt.Fprintf(out, "s2i: note: %s\n", n)
	}
}

// s2iSample lists the first few paths of a list.
func s2iSample(paths []string) string {
	const shown = 5
	if len(paths) <= shown {
		return strings.Join(paths, ", ")
	}
	return strings.Join(paths[:shown], ", ") + fmt.Sprintf(" and %d more", len(paths)-shown)
}
