// Package build is the façade of the builder: Build(ctx, Request) wires the frontend, store,
// registry, snapshotter and solver for one build and writes its outputs. The CLI fills a
// Request; nothing below this package sees flags.
package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/cache"
	"github.com/kiln-build/kiln/internal/frontend"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/internal/snapshot"
	"github.com/kiln-build/kiln/internal/solver"
	"github.com/kiln-build/kiln/internal/store"
)

// Request is one build as the user asked for it.
type Request struct {
	// ContextDir is the build context. Dockerfile is the Dockerfile's path ("" = Dockerfile or
	// Containerfile in the context; "-" = Stdin).
	ContextDir string
	Dockerfile string
	Stdin      io.Reader
	// Tags name the image in the local store and, with Push, in registries.
	Tags []string
	// Destinations are pushed to whether or not Push is set (kaniko's --destination); they
	// also name the image in the local store.
	Destinations []string
	BuildArgs    map[string]string
	Target       string
	Labels       map[string]string
	// Platform is the target platform; "" is the host's.
	Platform string
	// Network of RUN steps: "host" (default) or "none".
	Network string
	// Pull makes FROM images be pulled even when the local store has them.
	Pull bool
	// NoCache runs every step even when the store has its result; NoCacheFilter does so for
	// the stages it names.
	NoCache       bool
	NoCacheFilter []string
	// CacheFrom are caches to import (after the store); CacheTo where to export this build's.
	CacheFrom, CacheTo []cache.Spec
	Format             image.Format
	// Outputs are extra destinations (--output); Push pushes every tag.
	Outputs []Output
	Push    bool
	// SkipPushCheck skips checking, before the build, that every push destination accepts
	// pushes with the credentials at hand.
	SkipPushCheck bool
	// DigestFile and MetadataFile, when set, receive the image digest and a JSON summary.
	DigestFile, MetadataFile string
	// StoreRoot is the store directory; StorageDriver "overlay", "copy" or "" (auto).
	StoreRoot     string
	StorageDriver string
	// Registry configures how registries are reached: TLS, mirrors, credentials, retries.
	Registry []registry.Option
	// Fsync keeps fsync and friends working inside RUN (by default they are no-ops).
	Fsync bool
	// Compression is how layers are compressed when they are. With DisableCompression
	// (buildah's --disable-compression) the layers a build makes for an image that only goes
	// to the local store are not: the store keeps them unpacked, and they are compressed
	// when they leave it (a later build that pushes or exports them).
	Compression        image.Compression
	DisableCompression bool
	// SourceDateEpoch, when set, fixes timestamps for reproducible images.
	SourceDateEpoch *time.Time
	// Secrets are the --secret values by id, for RUN --mount=type=secret.
	Secrets map[string]solver.Secret
	// SquashOwners is set when kiln runs with a single mapped id.
	SquashOwners bool
	// Progress receives step lines and RUN output; nil discards them.
	Progress io.Writer
}

// Result describes the built image.
type Result struct {
	Digest       v1.Hash  `json:"digest"`
	ConfigDigest v1.Hash  `json:"configDigest"`
	MediaType    string   `json:"mediaType"`
	Size         int64    `json:"size"`
	References   []string `json:"references"`
	// RunSeconds is the time spent inside RUN processes; the rest of a build's time is kiln's.
	RunSeconds float64 `json:"runSeconds"`
	// Stages are the build's stages with their times: PullImages, Build, PushImage.
	Stages []Stage `json:"stages"`
	// Steps are the steps that ran (cache hits are not listed) with their times.
	Steps []StepTime `json:"steps,omitempty"`
}

// StepTime is how long a step that ran held its stage (Seconds), and how long its layer then
// took to write (CommitSeconds), in the background while the stage's later steps ran.
type StepTime struct {
	Step          string  `json:"step"`
	Seconds       float64 `json:"seconds"`
	CommitSeconds float64 `json:"commitSeconds"`
}

// The stages a build reports.
const (
	StagePull  = "PullImages"
	StageBuild = "Build"
	StagePush  = "PushImage"
)

// Stage is one stage of a build and how long it took.
type Stage struct {
	Name     string        `json:"name"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
}

// StageError is a failure in a named stage (PushImage), so that a caller can say which.
type StageError struct {
	Stage string
	Err   error
}

func (e *StageError) Error() string { return e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// storeOnly reports whether the image goes nowhere but the local store: no push, no --output,
// no --cache-to, and no SOURCE_DATE_EPOCH, whose clamped times a layer kept unpacked cannot
// keep.
func storeOnly(req Request) bool {
	refs, _ := pushDestinations(req)
	return len(refs) == 0 && len(req.Outputs) == 0 && len(req.CacheTo) == 0 && req.SourceDateEpoch == nil
}

// Build runs the build req describes.
func Build(ctx context.Context, req Request) (*Result, error) {
	if req.Progress == nil {
		req.Progress = io.Discard
	}
	if req.Platform == "" {
		req.Platform = "linux/" + runtime.GOARCH
	}
	if req.Format == "" {
		req.Format = image.OCI
	}
	if req.Compression == "" {
		req.Compression = image.Gzip
	}
	if _, err := image.LayerMediaType(req.Format, req.Compression); err != nil {
		return nil, err
	}
	compression := req.Compression
	if req.DisableCompression && storeOnly(req) {
		compression = image.Uncompressed
	}
	in, err := loadInputs(req)
	if err != nil {
		return nil, err
	}
	plan, err := frontend.Parse(in.dockerfile, frontend.Options{
		File: in.dockerfileName, BuildArgs: req.BuildArgs, Target: req.Target,
		Platform: req.Platform, BuildPlatform: "linux/" + runtime.GOARCH,
	})
	if err != nil {
		return nil, err
	}
	for _, a := range plan.UnusedBuildArgs {
		fmt.Fprintf(req.Progress, "warning: build arg %s was not consumed by any ARG instruction\n", a)
	}
	names, err := localNames(append(append([]string(nil), req.Tags...), req.Destinations...))
	if err != nil {
		return nil, err
	}
	regOpts := append([]registry.Option{registry.WithPlatform(platformOf(req.Platform)),
		registry.WithUserAgent("kiln"), registry.WithWarnings(req.Progress)}, req.Registry...)
	reg, err := registry.New(regOpts...)
	if err != nil {
		return nil, err
	}
	pushRefs, err := pushDestinations(req)
	if err != nil {
		return nil, err
	}
	if !req.SkipPushCheck {
		for _, ref := range pushRefs {
			if err := reg.CheckPush(ctx, ref); err != nil {
				return nil, fmt.Errorf("%w (checked before building; --skip-push-check skips this)", err)
			}
		}
	}
	st, err := store.Open(req.StoreRoot)
	if err != nil {
		return nil, fmt.Errorf("opening the store %s: %w", req.StoreRoot, err)
	}
	defer st.Close()
	// Pulled layers are kept unpacked only; pushing or exporting one downloads its blob again.
	st.SetFetcher(ctx, reg.Blob)
	unlock, err := st.Lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Snapshots live in this build's temporary session of the store, so whatever a killed
	// build leaves there is removed by the next Open.
	snapRoot, err := st.TempDir("snapshots-")
	if err != nil {
		return nil, err
	}
	snap, err := snapshot.New(snapRoot, req.StorageDriver, snapshot.Options{Durable: req.Fsync})
	if err != nil {
		return nil, fmt.Errorf("setting up the %q storage driver in %s: %w", req.StorageDriver, st.Root(), err)
	}
	imported := importCaches(ctx, req, reg)
	bases := &resolver{store: st, registry: reg, pull: req.Pull, progress: req.Progress, platform: req.Platform,
		lazy: len(imported) > 0, extract: archive.ExtractOptions{SquashOwners: req.SquashOwners, Warnings: req.Progress}}
	solveStart := time.Now()
	res, err := solver.New(solver.Config{
		Plan:             plan,
		Store:            st,
		Snapshotter:      snap,
		Bases:            bases,
		Context:          req.ContextDir,
		Excludes:         in.excludes,
		BuildArgs:        req.BuildArgs,
		Platform:         req.Platform,
		Network:          req.Network,
		NoSync:           !req.Fsync,
		Compression:      compression,
		SourceDateEpoch:  req.SourceDateEpoch,
		SquashOwners:     req.SquashOwners,
		Secrets:          req.Secrets,
		NoCache:          req.NoCache,
		NoCacheFilter:    req.NoCacheFilter,
		CacheFrom:        cacheSources(imported),
		CompressAllSteps: slices.ContainsFunc(req.CacheTo, func(c cache.Spec) bool { return c.Mode == cache.Max }),
		Progress:         req.Progress,
		Warnings:         req.Progress,
	}).Solve(ctx)
	if err != nil {
		return nil, err
	}
	cfg := res.Config
	if len(req.Labels) > 0 && cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	for k, v := range req.Labels {
		cfg.Config.Labels[k] = v
	}
	img, err := image.New(cfg, res.Layers, req.Format)
	if err != nil {
		return nil, fmt.Errorf("assembling the image: %w", err)
	}
	if err := st.SaveImage(ctx, img, names...); err != nil {
		return nil, fmt.Errorf("saving the image in the local store: %w", err)
	}
	result, err := describe(img, names)
	if err != nil {
		return nil, err
	}
	result.RunSeconds = res.RunTime.Seconds()
	for _, t := range res.Timings {
		result.Steps = append(result.Steps, StepTime{Step: t.Step, Seconds: t.Took.Seconds(), CommitSeconds: t.Commit.Seconds()})
	}
	pulling := time.Duration(bases.pulling.Load())
	result.Stages = []Stage{
		{Name: StagePull, Start: solveStart, Duration: pulling},
		{Name: StageBuild, Start: solveStart, Duration: max(time.Since(solveStart)-pulling, 0)},
	}
	if err := writeOutputs(ctx, req, reg, img, result); err != nil {
		return nil, err
	}
	if err := exportCaches(ctx, req, reg, st, res, imported); err != nil {
		return nil, err
	}
	return result, nil
}

func platformOf(p string) v1.Platform {
	pl, err := v1.ParsePlatform(p)
	if err != nil {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	return *pl
}

// localNames normalises -t names for the local store ("app" → "localhost/app:latest").
func localNames(tags []string) ([]string, error) {
	var out []string
	for _, t := range tags {
		n, err := store.NormalizeLocalName(t)
		if err != nil {
			return nil, fmt.Errorf("tag %q: %w", t, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func describe(img v1.Image, names []string) (*Result, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	refs := names
	if refs == nil {
		refs = []string{}
	}
	return &Result{Digest: d, ConfigDigest: cfgName, MediaType: string(mt), Size: size, References: refs}, nil
}

// DefaultStoreRoot is the store directory when --root is not given.
func DefaultStoreRoot() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "kiln")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), fmt.Sprintf("kiln-%d", os.Getuid()))
	}
	return filepath.Join(home, ".local", "share", "kiln")
}
