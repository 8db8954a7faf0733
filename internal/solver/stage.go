package solver

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/frontend"
	"github.com/kiln-build/kiln/internal/image"
)

// stageState is a stage being built: the image config so far, its layers and their unpacked
// directories, and the ARGs in scope.
type stageState struct {
	s     *Solver
	index int
	cfg   v1.ConfigFile
	// layers and dirs are parallel: dirs[i] is layers[i] unpacked (overlay format).
	layers []*image.Layer
	dirs   []string
	// args are the ARGs declared in this stage with their values.
	args map[string]string
	// cmdSet records that this stage wrote CMD, so a later ENTRYPOINT keeps it.
	cmdSet bool
	// key is the cache key of the stage's rootfs so far (see cache.go).
	key string
	// steps are the cache records of the steps that made this stage, its base stage's first.
	steps []Step
	// mu guards dirs while pending layers are fetched (see materialize): other stages read
	// a finished stage's rootfs concurrently.
	mu sync.Mutex
	// commits are the layers being written, in step order (commit.go).
	commits []*pendingCommit
	// line is the Dockerfile line of the step running, which progress lines about its layer name.
	line int
}

func (s *Solver) buildStage(ctx context.Context, i int) (*stageState, error) {
	plan := s.cfg.Plan
	stage := plan.Stages[i]
	st, err := s.baseState(ctx, stage)
	if err != nil {
		return nil, plan.Errorf(stage.Line, "FROM %s: %w", stage.Base, err)
	}
	s.out.printf("%s FROM %s\n", plan.Describe(i), stage.Base)
	err = st.runCommands(ctx, stage)
	// The layers of the steps that ran are written and cached, also when a later step failed.
	if ferr := st.finishCommits(); ferr != nil && err == nil {
		err = plan.Errorf(stage.Line, "writing the layers of %s: %w", plan.Describe(i), ferr)
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

// runCommands runs the base image's ONBUILD triggers, then the stage's commands.
func (st *stageState) runCommands(ctx context.Context, stage *frontend.Stage) error {
	plan := st.s.cfg.Plan
	triggers, err := frontend.ParseTriggers(plan.File, st.cfg.Config.OnBuild)
	if err != nil {
		return err
	}
	st.cfg.Config.OnBuild = nil
	st.line = stage.Line
	for _, cmd := range triggers {
		if err := st.dispatch(ctx, cmd, "ONBUILD "); err != nil {
			return plan.Errorf(stage.Line, "ONBUILD trigger %s of the base image: %w", cmd, err)
		}
	}
	for _, cmd := range stage.Commands {
		if err := ctx.Err(); err != nil {
			return err
		}
		st.line = frontend.Line(cmd)
		if err := st.dispatch(ctx, cmd, ""); err != nil {
			return plan.Errorf(frontend.Line(cmd), "%s: %w", commandText(cmd), err)
		}
	}
	return nil
}

// baseState resolves a stage's FROM: scratch, an earlier stage or an image.
func (s *Solver) baseState(ctx context.Context, stage *frontend.Stage) (*stageState, error) {
	st := &stageState{s: s, index: stage.Index, args: map[string]string{}}
	switch {
	case stage.BaseStage >= 0:
		base, err := s.waitStage(ctx, stage.BaseStage)
		if err != nil {
			return nil, err
		}
		st.cfg = *base.finalConfig()
		base.mu.Lock()
		st.layers = slices.Clone(base.layers)
		st.dirs = slices.Clone(base.dirs)
		base.mu.Unlock()
		st.key = base.key
		st.steps = slices.Clone(base.steps)
	case strings.EqualFold(stage.Base, "scratch"):
		os, arch, _ := strings.Cut(s.platform(stage), "/")
		arch, _, _ = strings.Cut(arch, "/")
		// BuildKit gives images built FROM scratch Docker's default PATH.
		st.cfg = v1.ConfigFile{OS: os, Architecture: arch, Config: v1.Config{Env: []string{defaultPath}}}
		st.key = keyOf("scratch", os, arch)
	default:
		img, err := s.cfg.Bases.Resolve(ctx, stage.Base, stage.Platform)
		if err != nil {
			return nil, err
		}
		layers, dirs, cfg, err := s.stored(img)
		if err != nil {
			return nil, err
		}
		digest, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("reading the image digest: %w", err)
		}
		st.cfg, st.layers, st.dirs = *cfg, layers, dirs
		st.key = keyOf("image", digest.String())
	}
	st.cfg.Config = cloneConfig(st.cfg.Config)
	st.cfg.History = slices.Clone(st.cfg.History)
	return st, nil
}

func (s *Solver) platform(stage *frontend.Stage) string {
	if stage.Platform != "" {
		return stage.Platform
	}
	if s.cfg.Platform != "" {
		return s.cfg.Platform
	}
	return "linux/" + runtime.GOARCH
}

// stored describes the layers of img, whose blobs are in the store, with their directories
// where they are unpacked already; the others are pending, unpacked when a step needs them.
func (s *Solver) stored(img v1.Image) ([]*image.Layer, []string, *v1.ConfigFile, error) {
	layers, err := image.StoredLayers(img, s.cfg.Store)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading image config: %w", err)
	}
	dirs := make([]string, len(layers))
	for i, l := range layers {
		if d, ok := s.cfg.Store.LayerDir(l.Diff); ok {
			dirs[i] = d
			continue
		}
		s.addPending(l.Desc.Digest, s.storedLayer(l.Desc, l.Diff))
	}
	c := *cfg
	return layers, dirs, &c, nil
}

// unpack makes sure img's layers are in the store and returns them with their directories.
func (s *Solver) unpack(ctx context.Context, img v1.Image) ([]*image.Layer, []string, *v1.ConfigFile, error) {
	dirs, err := s.cfg.Store.Unpack(ctx, img, archive.ExtractOptions{SquashOwners: s.cfg.SquashOwners, Warnings: s.cfg.Warnings})
	if err != nil {
		return nil, nil, nil, err
	}
	layers, err := image.StoredLayers(img, s.cfg.Store)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading image config: %w", err)
	}
	c := *cfg
	return layers, dirs, &c, nil
}

// finalConfig returns a copy of the stage's config.
func (st *stageState) finalConfig() *v1.ConfigFile {
	c := st.cfg
	c.Config = cloneConfig(c.Config)
	c.History = slices.Clone(c.History)
	return &c
}

func cloneConfig(c v1.Config) v1.Config {
	c.Env = slices.Clone(c.Env)
	c.Cmd = slices.Clone(c.Cmd)
	c.Entrypoint = slices.Clone(c.Entrypoint)
	c.Shell = slices.Clone(c.Shell)
	c.OnBuild = slices.Clone(c.OnBuild)
	c.Labels = maps.Clone(c.Labels)
	c.Volumes = maps.Clone(c.Volumes)
	c.ExposedPorts = maps.Clone(c.ExposedPorts)
	if c.Healthcheck != nil {
		h := *c.Healthcheck
		h.Test = slices.Clone(h.Test)
		c.Healthcheck = &h
	}
	return c
}

// addHistory records a step; emptyLayer is set for steps that changed only the config.
// recorded is the time the cache recorded for the step, or zero for a step made now.
func (st *stageState) addHistory(createdBy string, emptyLayer bool, recorded time.Time) {
	t := st.stepTime(recorded)
	st.cfg.History = append(st.cfg.History, v1.History{Created: v1.Time{Time: t}, CreatedBy: createdBy, EmptyLayer: emptyLayer})
	st.cfg.Created = v1.Time{Time: t}
}

// changeFS runs fn on a writable snapshot of the stage's rootfs and commits what it changed as
// a new layer, written while the stage goes on (commit.go). A step that changes nothing adds
// no layer (its history says empty_layer). key is the step's cache key (stepKey), "" when the
// step must not be cached: a step recorded under the same key is reused without running fn.
func (st *stageState) changeFS(ctx context.Context, createdBy, key string, fn func(root string) error) error {
	if key != "" && st.reuse(createdBy, key) {
		return nil
	}
	start := time.Now()
	dirs, err := st.rootfs(ctx)
	if err != nil {
		return err
	}
	active, err := st.s.cfg.Snapshotter.Prepare(ctx, dirs)
	if err != nil {
		return fmt.Errorf("preparing a snapshot: %w", err)
	}
	defer active.Release()
	if err := fn(active.Root()); err != nil {
		return err
	}
	return st.sealAndCommit(ctx, active, createdBy, key, start)
}

// reuse applies the step recorded under key, when a cache has it and the stage may use the
// cache. A layer from an imported cache is only noted: it is fetched when something needs it.
func (st *stageState) reuse(createdBy, key string) bool {
	step, dir, ok := st.lookup(key)
	if !ok {
		return false
	}
	st.key = key
	st.steps = append(st.steps, Step{Key: key, CachedStep: step})
	if step.Layer == nil {
		st.s.out.printf("%s --> cached, no changes\n", st.s.cfg.Plan.Describe(st.index))
		st.addHistory(createdBy, true, step.Created)
		return true
	}
	st.mu.Lock()
	st.layers = append(st.layers, image.StoredLayer(st.s.cfg.Store, *step.Layer, *step.DiffID))
	st.dirs = append(st.dirs, dir)
	st.mu.Unlock()
	st.s.out.printf("%s --> cached, layer %s\n", st.s.cfg.Plan.Describe(st.index), step.Layer.Digest.Hex[:12])
	st.addHistory(createdBy, false, step.Created)
	return true
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// emptyTarSize is the size of a layer tar without entries (two zero blocks).
const emptyTarSize = 1024

// commandText is an instruction as written, for errors and history.
func commandText(cmd instructions.Command) string {
	if s, ok := cmd.(fmt.Stringer); ok {
		return s.String()
	}
	return strings.ToUpper(cmd.Name())
}
