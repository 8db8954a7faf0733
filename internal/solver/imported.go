package solver

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/store"
)

// CacheSource is a build cache imported with --cache-from: step records by key, and the layers
// they name. A hit costs nothing until a layer is needed: layers are fetched only when a later
// step runs on the rootfs, another stage reads it, or the final image holds them.
type CacheSource interface {
	// Name says where the cache comes from, for messages.
	Name() string
	// Step returns the step recorded under key.
	Step(key string) (store.CachedStep, bool)
	// Layer returns the layer a step of this cache recorded.
	Layer(ctx context.Context, step store.CachedStep) (v1.Layer, error)
}

// Step is a step's cache record under its key, as a build produced or reused it.
type Step struct {
	Key string
	store.CachedStep
}

// pending are the layers a stage holds without their unpacked directory, by digest: base
// layers (their blobs are in the store) and imported cache hits (their blobs may not be).
// They are unpacked when a step needs the rootfs, and only fetched when just the image does.
type pending struct {
	mu     sync.Mutex
	layers map[v1.Hash]pendingLayer
}

// pendingLayer opens a pending layer; where names where it comes from, for errors.
type pendingLayer struct {
	where string
	open  func(ctx context.Context) (v1.Layer, error)
}

// addPending notes a layer to unpack or fetch later.
func (s *Solver) addPending(digest v1.Hash, p pendingLayer) {
	s.pending.mu.Lock()
	defer s.pending.mu.Unlock()
	if s.pending.layers == nil {
		s.pending.layers = map[v1.Hash]pendingLayer{}
	}
	s.pending.layers[digest] = p
}

// pendingLayers opens the stage's layers that have no directory, with their indexes.
func (st *stageState) pendingLayers(ctx context.Context) ([]int, []v1.Layer, int64, error) {
	var idx []int
	var layers []v1.Layer
	var size int64
	for i, d := range st.dirs {
		if d != "" {
			continue
		}
		digest := st.layers[i].Desc.Digest
		st.s.pending.mu.Lock()
		p, ok := st.s.pending.layers[digest]
		st.s.pending.mu.Unlock()
		if !ok {
			return nil, nil, 0, fmt.Errorf("internal error: layer %s has no directory and no source", digest)
		}
		l, err := p.open(ctx)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("opening layer %s from %s: %w", digest, p.where, err)
		}
		idx, layers = append(idx, i), append(layers, l)
		size += st.layers[i].Desc.Size
	}
	return idx, layers, size, nil
}

// imported looks key up in the --cache-from sources, in order. A layer it names that the store
// lacks is noted as pending, to be fetched when needed; dir is its directory when the store
// already has it.
func (s *Solver) imported(key string) (step store.CachedStep, dir string, ok bool) {
	for _, src := range s.cfg.CacheFrom {
		step, ok := src.Step(key)
		if !ok {
			continue
		}
		if step.Layer == nil || step.DiffID == nil {
			return step, "", true
		}
		if d, unpacked := s.cfg.Store.LayerDir(*step.DiffID); unpacked && s.cfg.Store.HasBlob(step.Layer.Digest) {
			return step, d, true
		}
		s.addPending(step.Layer.Digest, pendingLayer{where: src.Name(), open: func(ctx context.Context) (v1.Layer, error) {
			return src.Layer(ctx, step)
		}})
		return step, "", true
	}
	return store.CachedStep{}, "", false
}

// materialize unpacks the stage's pending layers (fetching those of imported cache hits), so
// that its rootfs can be read or built on. Layers are unpacked in parallel.
func (st *stageState) materialize(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	idx, layers, size, err := st.pendingLayers(ctx)
	if err != nil || len(layers) == 0 {
		return err
	}
	start := time.Now()
	dirs, err := st.s.cfg.Store.UnpackLayers(ctx, layers, archive.ExtractOptions{SquashOwners: st.s.cfg.SquashOwners, Warnings: st.s.cfg.Warnings})
	if err != nil {
		return fmt.Errorf("unpacking layers: %w", err)
	}
	for j, i := range idx {
		st.dirs[i] = dirs[j]
	}
	st.s.out.printf("%s unpacked %d layers (%s) in %s\n", st.s.cfg.Plan.Describe(st.index), len(layers),
		humanBytes(size), time.Since(start).Round(time.Millisecond))
	return nil
}

// fetchBlobs makes sure the store holds the blobs of all the stage's layers, without unpacking
// the pending ones: what the final image needs when no step read its rootfs.
func (st *stageState) fetchBlobs(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	idx, pending, _, err := st.pendingLayers(ctx)
	if err != nil {
		return err
	}
	var layers []v1.Layer
	var size int64
	for j, l := range pending {
		if desc := st.layers[idx[j]].Desc; !st.s.cfg.Store.HasBlob(desc.Digest) {
			layers, size = append(layers, l), size+desc.Size
		}
	}
	if len(layers) == 0 {
		return nil
	}
	start := time.Now()
	if err := st.s.cfg.Store.FetchBlobs(ctx, layers); err != nil {
		return fmt.Errorf("fetching cached layers: %w", err)
	}
	st.s.out.printf("%s fetched %d layers (%s) in %s\n", st.s.cfg.Plan.Describe(st.index), len(layers),
		humanBytes(size), time.Since(start).Round(time.Millisecond))
	return nil
}

// rootfs returns the stage's layers and directories, fetching pending layers first.
func (st *stageState) rootfs(ctx context.Context) ([]string, error) {
	if err := st.materialize(ctx); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.dirs...), nil
}

// storedLayer is a pending layer whose blob is in the store.
func (s *Solver) storedLayer(desc v1.Descriptor, diffID v1.Hash) pendingLayer {
	l := image.StoredLayer(s.cfg.Store, desc, diffID)
	return pendingLayer{where: "the store", open: func(context.Context) (v1.Layer, error) { return l, nil }}
}

// stepTime is the time a step is recorded with: SOURCE_DATE_EPOCH when set, else the time the
// cache recorded for it, else now.
func (st *stageState) stepTime(recorded time.Time) time.Time {
	if st.s.cfg.SourceDateEpoch != nil {
		return st.s.cfg.SourceDateEpoch.UTC()
	}
	if !recorded.IsZero() {
		return recorded.UTC()
	}
	return time.Now().UTC()
}

// noCache reports whether this stage must run every step (--no-cache, --no-cache-filter).
func (st *stageState) noCache() bool {
	if st.s.cfg.NoCache {
		return true
	}
	for _, f := range st.s.cfg.NoCacheFilter {
		if i, ok := st.s.cfg.Plan.StageByName(f, len(st.s.cfg.Plan.Stages)); ok && i == st.index {
			return true
		}
	}
	return false
}

// lookup finds the step recorded under key: in the store, else in the imported caches. dir is
// the layer's directory, "" while it is pending.
func (st *stageState) lookup(key string) (step store.CachedStep, dir string, ok bool) {
	if st.noCache() {
		return store.CachedStep{}, "", false
	}
	if step, ok := st.s.cfg.Store.CachedStep(key); ok {
		if step.Layer != nil {
			var unpacked bool
			if dir, unpacked = st.s.cfg.Store.LayerDir(*step.DiffID); !unpacked {
				st.s.addPending(step.Layer.Digest, st.s.storedLayer(*step.Layer, *step.DiffID))
			}
		}
		return step, dir, true
	}
	step, dir, ok = st.s.imported(key)
	if ok {
		// Remember it here too: once its layer is fetched, the next build hits locally.
		st.s.cfg.Store.RecordStep(key, step)
	}
	return step, dir, ok
}

// configStep records a config-only instruction (ENV, LABEL, CMD, ...) in the history. Its time
// comes from the cache when an earlier build recorded the same step, so that a rebuild whose
// every step hits gives the same image.
func (st *stageState) configStep(text string) error {
	key := st.stepKey(false, text)
	step, _, ok := st.lookup(key)
	if !ok {
		step = store.CachedStep{Created: st.stepTime(time.Time{})}
		if err := st.s.cfg.Store.RecordStep(key, step); err != nil {
			return err
		}
	}
	st.addHistory(text, true, step.Created)
	st.steps = append(st.steps, Step{Key: key, CachedStep: step})
	return nil
}
