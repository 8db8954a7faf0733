// Package solver walks a frontend.Plan and produces an image: it resolves each stage's base,
// dispatches every instruction (config changes in memory, COPY/ADD/RUN through the executor on a
// snapshot) and commits each file-changing step as a layer in the store. Independent stages run
// concurrently. It is the only package that executes a plan.
package solver

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/patternmatcher"
	"golang.org/x/sync/errgroup"

	"github.com/kiln-build/kiln/internal/frontend"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/snapshot"
	"github.com/kiln-build/kiln/internal/store"
)

// BaseResolver finds the image a FROM or --from names (local store or registry).
type BaseResolver interface {
	// Resolve returns the image ref names for the given platform ("" = the build's).
	Resolve(ctx context.Context, ref, platform string) (v1.Image, error)
}

// Config is what a Solver needs; it is built once per build by the build package.
type Config struct {
	Plan        *frontend.Plan
	Store       *store.Store
	Snapshotter snapshot.Snapshotter
	Bases       BaseResolver
	// Context is the build context directory; Excludes its .dockerignore rules.
	Context  string
	Excludes *patternmatcher.PatternMatcher
	// BuildArgs are the --build-arg values.
	BuildArgs map[string]string
	// Platform is the target platform ("linux/amd64").
	Platform string
	// Network is the RUN network: "host" or "none". NoSync makes fsync and friends no-ops
	// inside RUN.
	Network string
	NoSync  bool
	// Secrets are the --secret values by id.
	Secrets map[string]Secret
	// NoCache runs every step even when the store holds its result (--no-cache); results
	// are still recorded. NoCacheFilter does so for the stages it names (--no-cache-filter).
	NoCache       bool
	NoCacheFilter []string
	// CacheFrom are imported caches, looked up in order after the store.
	CacheFrom []CacheSource
	// Compression of the layers kiln writes. Unless it is Uncompressed, the layers of the
	// result that earlier builds kept unpacked are compressed too: those of the target's image
	// and its steps, and with CompressAllSteps those of every stage's steps (what a
	// --cache-to with mode=max exports).
	Compression      image.Compression
	CompressAllSteps bool
	// SourceDateEpoch, when set, fixes created times and clamps file mtimes.
	SourceDateEpoch *time.Time
	// SquashOwners is set when only one id is mapped: base layers are unpacked with owners 0:0.
	SquashOwners bool
	// Progress receives step lines and RUN output; Warnings receives warnings.
	Progress io.Writer
	Warnings io.Writer
}

// Result is the target stage's image content, and the cache records of the build.
type Result struct {
	Config *v1.ConfigFile
	Layers []*image.Layer
	// Steps made the target stage (and the stages it is built FROM); AllSteps made every
	// stage built. They are what --cache-to exports with mode=min and mode=max.
	Steps, AllSteps []Step
	// RunTime is the time spent inside RUN processes, summed over steps (stages that run
	// concurrently add up).
	RunTime time.Duration
	// Timings are the steps that ran (not the cache hits), each stage's in step order.
	Timings []StepTiming
}

// StepTiming is how long one step that changed the filesystem held its stage (Took: its
// command, and moving its diff out of the snapshot), and how long its layer took to write as
// a compressed blob (Commit), which the stage's later steps overlap (commit.go).
type StepTiming struct {
	Step         string // the step as the progress output names it, "[stage 1/2] RUN ..."
	Took, Commit time.Duration
}

// Solver runs one Plan.
type Solver struct {
	cfg     Config
	stages  map[int]*stageResult
	out     *progress
	pending pending
	runTime atomic.Int64

	mu      sync.Mutex // guards timings
	timings []StepTiming
}

type stageResult struct {
	done  chan struct{}
	state *stageState
	err   error
}

// New returns a Solver for cfg.
func New(cfg Config) *Solver {
	if cfg.Network == "" {
		cfg.Network = "host"
	}
	if cfg.Compression == "" {
		cfg.Compression = image.Gzip
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Warnings == nil {
		cfg.Warnings = io.Discard
	}
	s := &Solver{cfg: cfg, stages: map[int]*stageResult{}, out: &progress{w: cfg.Progress}}
	for _, i := range cfg.Plan.Needed() {
		s.stages[i] = &stageResult{done: make(chan struct{})}
	}
	return s
}

// Solve builds every stage the target needs, concurrently where they are independent, and
// returns the target's image content.
func (s *Solver) Solve(ctx context.Context) (*Result, error) {
	g, gctx := errgroup.WithContext(ctx)
	for i, r := range s.stages {
		g.Go(func() error {
			defer close(r.done)
			r.state, r.err = s.buildStage(gctx, i)
			return r.err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	st := s.stages[s.cfg.Plan.Target].state
	// The image needs its layers' blobs in the store, cache hits included; not their content.
	if err := st.fetchBlobs(ctx); err != nil {
		return nil, err
	}
	res := &Result{Config: st.finalConfig(), Layers: slices.Clone(st.layers), Steps: slices.Clone(st.steps), RunTime: time.Duration(s.runTime.Load())}
	s.mu.Lock()
	res.Timings = slices.Clone(s.timings)
	s.mu.Unlock()
	seen := map[string]bool{}
	for _, i := range s.cfg.Plan.Needed() {
		for _, step := range s.stages[i].state.steps {
			if !seen[step.Key] {
				seen[step.Key] = true
				res.AllSteps = append(res.AllSteps, step)
			}
		}
	}
	if s.cfg.Compression != image.Uncompressed {
		if err := s.compressResult(ctx, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// compressResult compresses the layers of res that earlier builds left uncompressed, kept
// unpacked in the store, since this build's image leaves the store (or its cache does): the
// image's, its steps', and every stage's steps' with CompressAllSteps. The steps that made them
// are recorded again with the compressed layer, so later builds reuse it.
func (s *Solver) compressResult(ctx context.Context, res *Result) error {
	stepSets := [][]Step{res.Steps}
	if s.cfg.CompressAllSteps {
		stepSets = append(stepSets, res.AllSteps)
	}
	kept := slices.Clone(res.Layers)
	for _, steps := range stepSets {
		for _, step := range steps {
			if step.Layer != nil && image.IsUncompressed(step.Layer.MediaType) {
				kept = append(kept, image.StoredLayer(s.cfg.Store, *step.Layer, *step.DiffID))
			}
		}
	}
	compressed, err := s.compressKept(ctx, kept)
	if err != nil {
		return err
	}
	for i, l := range res.Layers {
		if c, ok := compressed[l.Diff]; ok && l.Dir != "" {
			res.Layers[i] = c
		}
	}
	for _, steps := range stepSets {
		for i, step := range steps {
			if step.Layer == nil || !image.IsUncompressed(step.Layer.MediaType) {
				continue
			}
			c, ok := compressed[*step.DiffID]
			if !ok {
				continue // a blob the store has, not a layer kept unpacked
			}
			steps[i].Layer = &c.Desc
			if err := s.cfg.Store.RecordStep(step.Key, steps[i].CachedStep); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitStage waits for stage i (which the caller depends on) and returns its final state.
func (s *Solver) waitStage(ctx context.Context, i int) (*stageState, error) {
	r, ok := s.stages[i]
	if !ok {
		return nil, fmt.Errorf("internal error: stage %d is not scheduled", i)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, fmt.Errorf("stage %d failed", i+1)
	}
	return r.state, nil
}

// progress writes step lines; it serialises writes from concurrent stages and from layers
// being written, and starts each step line on a line of its own.
type progress struct {
	mu sync.Mutex
	w  io.Writer
	// midLine is set when RUN output last written did not end its line.
	midLine bool
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.midLine {
		io.WriteString(p.w, "\n")
		p.midLine = false
	}
	fmt.Fprintf(p.w, format, args...)
}

// Write passes RUN output through.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.w.Write(b)
	if n > 0 {
		p.midLine = b[n-1] != '\n'
	}
	return n, err
}
