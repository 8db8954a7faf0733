package solver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/image"
	"github.com/kiln-build/kiln/internal/snapshot"
	"github.com/kiln-build/kiln/internal/store"
)

// A step's layer is written while the later steps of its stage run. When a step's command
// ends, its snapshot is sealed: the diff moves to a directory of the build's own, which the
// next step stacks as a lower at once. A goroutine meanwhile writes that directory as a
// compressed blob (a lower is only read, so the two do not meet). The stage's layers are
// written one after the other, in step order. Before the stage ends, finishCommits waits for
// them; only then are their directories moved to their place in the store, their steps
// recorded in the cache and their layers put in the stage's image. Apt installing the next
// layer's packages is mostly one process on one core, so on a machine with two or more, a
// layer costs little more than its last step's commit.

// pendingCommit is one step's layer being written.
type pendingCommit struct {
	done chan struct{}
	// prev is the stage's commit before this one, which this one waits for.
	prev *pendingCommit
	dest string // the sealed diff, in a temporary directory of its own: a lower of later steps until the stage ends
	// Where the step's entries are in the stage, filled in by finishCommits.
	key       string
	layer     int // index in layers and dirs
	history   int // index in cfg.History
	step      int // index in steps; -1 for a step that is not cached
	createdBy string
	stage     string // the stage as progress lines name it
	line      int    // the step's Dockerfile line
	sealed    time.Duration

	// Set before done is closed.
	result *image.Layer // nil when the step changed nothing
	took   time.Duration
	err    error
}

// sealAndCommit seals the step's snapshot, starts writing its layer, and notes the step in
// the stage as a layer whose blob is still being written.
func (st *stageState) sealAndCommit(ctx context.Context, active snapshot.Active, createdBy, key string, started time.Time) error {
	tmp, err := st.s.cfg.Store.TempDir("commit-")
	if err != nil {
		return err
	}
	p := &pendingCommit{done: make(chan struct{}), dest: filepath.Join(tmp, "diff"), key: key, createdBy: createdBy, step: -1,
		stage: st.s.cfg.Plan.Describe(st.index), line: st.line}
	if err := active.Seal(ctx, p.dest); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("committing layer: %w", err)
	}
	p.sealed = time.Since(started)
	if n := len(st.commits); n > 0 {
		p.prev = st.commits[n-1]
	}
	go p.write(ctx, st.s)

	created := st.stepTime(time.Time{})
	st.mu.Lock()
	p.layer = len(st.layers)
	st.layers = append(st.layers, &image.Layer{}) // filled in by finishCommits
	st.dirs = append(st.dirs, p.dest)
	st.mu.Unlock()
	if key != "" {
		st.key = key
		p.step = len(st.steps)
		st.steps = append(st.steps, Step{Key: key, CachedStep: store.CachedStep{Created: created}})
	}
	p.history = len(st.cfg.History)
	st.addHistory(createdBy, false, created)
	st.commits = append(st.commits, p)
	st.s.out.printf("%s --> %s, writing its layer\n", p.stage, p.sealed.Round(time.Millisecond))
	return nil
}

// write writes the sealed diff as a compressed blob into the store, after the stage's commit
// before it.
func (p *pendingCommit) write(ctx context.Context, s *Solver) {
	defer close(p.done)
	if p.prev != nil {
		<-p.prev.done
	}
	if p.prev != nil && p.prev.err != nil {
		p.err = fmt.Errorf("not written: the layer of %s before it failed", p.prev.createdBy)
		return
	}
	start := time.Now()
	p.result, p.err = s.writeLayer(ctx, p.dest, s.cfg.SourceDateEpoch)
	p.took = time.Since(start)
	switch {
	case p.err != nil:
	case p.result == nil:
		s.out.printf("%s %s: no changes, no layer\n", p.stage, p.name(s.cfg.Plan.File))
	case p.result.Dir != "":
		s.out.printf("%s %s: layer %s (%s, kept unpacked, uncompressed), hashed in %s\n", p.stage, p.name(s.cfg.Plan.File),
			p.result.Desc.Digest.Hex[:12], humanBytes(p.result.Desc.Size), p.took.Round(time.Millisecond))
	default:
		s.out.printf("%s %s: layer %s (%s), written in %s\n", p.stage, p.name(s.cfg.Plan.File), p.result.Desc.Digest.Hex[:12],
			humanBytes(p.result.Desc.Size), p.took.Round(time.Millisecond))
	}
}

// name names the step in a progress line: its text, cut to fit, and its place in the
// Dockerfile, as in "RUN apt-get update && apt-get inst… (Dockerfile:7)".
func (p *pendingCommit) name(file string) string {
	const max = 40
	text := p.createdBy
	if r := []rune(text); len(r) > max {
		text = string(r[:max-1]) + "…"
	}
	return fmt.Sprintf("%s (%s:%d)", text, file, p.line)
}

// writeLayer writes the layer directory dir as a compressed blob into the store while hashing
// it, its times clamped to epoch when set. It returns nil when the layer has no entries.
// Uncompressed layers are only hashed: the store keeps them unpacked, and the layer names dir
// until finishCommit moves it.
func (s *Solver) writeLayer(ctx context.Context, dir string, epoch *time.Time) (*image.Layer, error) {
	if s.cfg.Compression == image.Uncompressed {
		if epoch != nil {
			// The blob is written again from dir when read, without the clamped times.
			return nil, errors.New("committing layer: uncompressed layers cannot have SOURCE_DATE_EPOCH's clamped times; compress them")
		}
		bw, err := archiveLayer(ctx, io.Discard, dir, archive.None, nil)
		if err != nil || bw.UncompressedSize() <= emptyTarSize {
			return nil, err
		}
		return &image.Layer{
			Path: s.cfg.Store.BlobPath(bw.DiffID()),
			Dir:  dir,
			Desc: v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: bw.UncompressedSize(), Digest: bw.DiffID()},
			Diff: bw.DiffID(),
		}, nil
	}
	pr, pw := io.Pipe()
	type written struct {
		digest v1.Hash
		size   int64
		err    error
	}
	done := make(chan written, 1)
	go func() {
		d, n, err := s.cfg.Store.WriteBlob(ctx, pr, v1.Hash{})
		pr.CloseWithError(err)
		done <- written{d, n, err}
	}()
	bw, err := archiveLayer(ctx, pw, dir, string(s.cfg.Compression), epoch)
	pw.CloseWithError(err)
	w := <-done
	if err != nil {
		return nil, err
	}
	if w.err != nil {
		return nil, fmt.Errorf("storing layer blob: %w", w.err)
	}
	if bw.UncompressedSize() <= emptyTarSize {
		return nil, nil
	}
	mt, err := image.LayerMediaType(image.OCI, s.cfg.Compression)
	if err != nil {
		return nil, err
	}
	return &image.Layer{
		Path: s.cfg.Store.BlobPath(w.digest),
		Desc: v1.Descriptor{MediaType: types.MediaType(mt), Size: w.size, Digest: w.digest},
		Diff: bw.DiffID(),
	}, nil
}

// archiveLayer writes dir as a layer tar, compressed as compression says, into w, and returns
// the closed BlobWriter that hashed it.
func archiveLayer(ctx context.Context, w io.Writer, dir, compression string, epoch *time.Time) (*archive.BlobWriter, error) {
	bw, err := archive.NewBlobWriter(w, compression)
	if err != nil {
		return nil, err
	}
	err = archive.WriteDiff(ctx, bw, dir, archive.WriteOptions{SourceDateEpoch: epoch})
	if cerr := bw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("committing layer: %w", err)
	}
	return bw, nil
}

// compressKept compresses, as the build's compression, the layers among layers that the store
// keeps only unpacked (made by builds whose image stayed in the store). It returns the
// compressed layer of each of their diffIDs.
func (s *Solver) compressKept(ctx context.Context, layers []*image.Layer) (map[v1.Hash]*image.Layer, error) {
	done := map[v1.Hash]*image.Layer{}
	for _, l := range layers {
		if _, ok := done[l.Diff]; ok || l.Dir == "" {
			continue
		}
		start := time.Now()
		c, err := s.writeLayer(ctx, l.Dir, nil) // kept layers were made without SOURCE_DATE_EPOCH
		if err == nil && (c == nil || c.Diff != l.Diff) {
			err = fmt.Errorf("its directory %s no longer archives as the layer", l.Dir)
		}
		if err != nil {
			return nil, fmt.Errorf("compressing layer %s: %w", l.Diff, err)
		}
		s.out.printf("compressed layer %s (%s), kept unpacked by an earlier build: %s (%s) in %s\n", l.Diff.Hex[:12],
			humanBytes(l.Desc.Size), c.Desc.Digest.Hex[:12], humanBytes(c.Desc.Size), time.Since(start).Round(time.Millisecond))
		done[l.Diff] = c
	}
	return done, nil
}

// finishCommits waits for the stage's layers to be written, moves their directories into the
// store, records their steps in the cache and puts them in the stage; steps that changed
// nothing lose their layer and become empty_layer history. No snapshot of the stage may be
// active. It returns the first error; the commits after a failed one are still waited for.
func (st *stageState) finishCommits() error {
	commits := st.commits
	st.commits = nil
	var errs []error
	var empty []int // layer indexes to drop, ascending
	for _, p := range commits {
		<-p.done
		err := p.err
		if err == nil {
			err = st.finishCommit(p)
		}
		os.RemoveAll(filepath.Dir(p.dest))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if p.result == nil {
			empty = append(empty, p.layer)
		}
	}
	st.mu.Lock()
	for _, i := range slices.Backward(empty) {
		st.layers = slices.Delete(st.layers, i, i+1)
		st.dirs = slices.Delete(st.dirs, i, i+1)
	}
	st.mu.Unlock()
	return errors.Join(errs...)
}

// finishCommit puts one written layer in place.
func (st *stageState) finishCommit(p *pendingCommit) error {
	st.s.mu.Lock()
	st.s.timings = append(st.s.timings, StepTiming{Step: p.stage + " " + p.createdBy, Took: p.sealed, Commit: p.took})
	st.s.mu.Unlock()
	step := store.CachedStep{Created: st.cfg.History[p.history].Created.Time}
	if p.result == nil {
		st.cfg.History[p.history].EmptyLayer = true
	} else {
		dir, err := st.s.cfg.Store.AddLayerDir(p.dest, p.result.Diff)
		if err != nil {
			return err
		}
		step.Layer, step.DiffID = &p.result.Desc, &p.result.Diff
		if p.result.Dir != "" {
			p.result.Dir = dir
		}
		st.mu.Lock()
		*st.layers[p.layer] = *p.result
		st.dirs[p.layer] = dir
		st.mu.Unlock()
	}
	if p.step >= 0 {
		if err := st.s.cfg.Store.RecordStep(p.key, step); err != nil {
			return err
		}
		st.steps[p.step].CachedStep = step
	}
	return nil
}
