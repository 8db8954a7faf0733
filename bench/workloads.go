package main

import (
	"context"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// kind says how a workload is measured.
type kind int

const (
	// standard: one cold build per run into a fresh store.
	standard kind = iota
	// rebuild: a warm rebuild after one source change, and a rebuild from a
	// registry cache into an empty store.
	rebuild
	// cacheLookup: a fully cached rebuild from a registry cache, counting the
	// registry requests (kiln only).
	cacheLookup
	// goCacheMount: two builds of a Go program with a cache mount, one source
	// file changed in between.
	goCacheMount
)

// workload is one benchmark case: a build context under bench/workloads.
type workload struct {
	name string
	// dir is the context directory's name under bench/workloads.
	dir string
	// base is the image its Dockerfile starts FROM.
	base string
	// apt workloads install packages through the apt proxy; the harness
	// warms the proxy with one untimed build of each before timing anything.
	apt bool
	// inDefault workloads run when -workloads is not given.
	inDefault bool
	// needBytes estimates the disk one run needs; the workload is skipped
	// when less than three times that is free.
	needBytes int64
	kind      kind
	// changeFile is the file, relative to the context, that rebuild and
	// goCacheMount change between their two builds.
	changeFile string
	// baseline workloads only pull their base image: their wall time is the
	// part of every other workload's time spent pulling that base.
	baseline bool
}

const (
	debianBase  = "localhost:5000/debian:bookworm"
	busyboxBase = "localhost:5000/busybox:latest"
	gib         = int64(1) << 30
	mib         = int64(1) << 20
)

// allWorkloads lists every workload in the order they run.
func allWorkloads() []workload {
	return []workload{
		{name: "pull-busybox", dir: "pull-busybox", base: busyboxBase, inDefault: true, needBytes: 100 * mib, baseline: true},
		{name: "pull-debian", dir: "pull-debian", base: debianBase, inDefault: true, needBytes: 1 * gib, baseline: true},
		{name: "gcc", dir: "gcc", base: debianBase, apt: true, inDefault: true, needBytes: 1 * gib},
		{name: "chrony", dir: "chrony", base: debianBase, apt: true, inDefault: true, needBytes: 1 * gib},
		{name: "scipy", dir: "scipy", base: debianBase, apt: true, inDefault: true, needBytes: 3 * gib},
		{name: "large", dir: "large", base: debianBase, apt: true, needBytes: 14 * gib},
		{name: "files-10k", dir: "files-10k", base: busyboxBase, inDefault: true, needBytes: 200 * mib},
		{name: "files-100k", dir: "files-100k", base: busyboxBase, inDefault: true, needBytes: 2 * gib},
		{name: "files-500k", dir: "files-500k", base: busyboxBase, inDefault: true, needBytes: 8 * gib},
		{name: "files-bigfiles", dir: "files-bigfiles", base: busyboxBase, inDefault: true, needBytes: 3 * gib},
		{name: "rebuild", dir: "gcc", base: debianBase, apt: true, inDefault: true, needBytes: 1 * gib, kind: rebuild, changeFile: "hello.c"},
		{name: "cache-lookup", dir: "cache-lookup", base: busyboxBase, inDefault: true, needBytes: 100 * mib, kind: cacheLookup},
		{name: "go-cache-mount", dir: "go-cache-mount", base: debianBase, apt: true, inDefault: true, needBytes: 2 * gib, kind: goCacheMount, changeFile: "main.go"},
	}
}

func workloadNames() []string {
	var names []string
	for _, w := range allWorkloads() {
		names = append(names, w.name)
	}
	return names
}

func workloadByName(name string) (workload, bool) {
	for _, w := range allWorkloads() {
		if w.name == name {
			return w, true
		}
	}
	return workload{}, false
}

// contextDir is the workload's build context in the repository.
func (h *harness) contextDir(w workload) string {
	return filepath.Join(h.cfg.repoRoot, "bench", "workloads", w.dir)
}

// skipReason says why w cannot run here, or "" when it can.
func (h *harness) skipReason(w workload) string {
	var st unix.Statfs_t
	if err := unix.Statfs(h.cfg.workDir, &st); err != nil {
		return fmt.Sprintf("checking free space on %s: %v", h.cfg.workDir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free < 3*w.needBytes {
		return fmt.Sprintf("%s has %s free; this workload needs about %s per run and is run only with three times that free",
			h.cfg.workDir, formatBytes(free), formatBytes(w.needBytes))
	}
	return ""
}

// buildersFor is the builders that take part in w, in -builders order.
func (h *harness) buildersFor(w workload) []string {
	if w.kind != cacheLookup {
		return h.cfg.builders
	}
	for _, b := range h.cfg.builders {
		if b == "kiln" {
			return []string{"kiln"}
		}
	}
	return nil
}

// runWorkload runs every run of w, alternating the builders within each run,
// and appends what it measured to res.
func (h *harness) runWorkload(ctx context.Context, w workload, res *results) {
	builders := h.buildersFor(w)
	if len(builders) == 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%s: not run: it measures kiln only and -builders has no kiln", w.name))
		return
	}
	for run := 1; run <= h.cfg.runs; run++ {
		for _, name := range builders {
			if ctx.Err() != nil {
				return
			}
			b, _ := builderByName(name)
			switch w.kind {
			case standard:
				res.add(h.measureStandard(ctx, w, b, run))
			case rebuild:
				warm, fromRegistry := h.measureRebuild(ctx, w, b, run)
				res.add(warm, fromRegistry)
			case cacheLookup:
				res.CacheLookup = append(res.CacheLookup, h.measureCacheLookup(ctx, w, run))
			case goCacheMount:
				res.GoCacheMount = append(res.GoCacheMount, h.measureGoCacheMount(ctx, w, b, run))
			}
		}
	}
}
