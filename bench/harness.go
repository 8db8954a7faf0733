package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
)

// harness runs builds and measures them. It holds no global state: one
// harness per benchmark.
type harness struct {
	cfg config
	env machineEnv
	// sizes caches uncompressed layer sizes by blob digest.
	sizes sizeCache
	// proxy counts registry requests for cache-lookup, started on first use.
	proxy *countingProxy
}

func newHarness(cfg config, env machineEnv) *harness {
	return &harness{cfg: cfg, env: env, sizes: sizeCache{}}
}

func (h *harness) close() {
	if h.proxy != nil {
		h.proxy.close()
	}
}

func (h *harness) logf(format string, args ...any) { log.Printf(format, args...) }

// aptArgs are the build args of a workload: the apt proxy for apt workloads.
func (h *harness) aptArgs(w workload) []string {
	if !w.apt {
		return nil
	}
	return []string{"http_proxy=" + h.cfg.aptProxy}
}

// warmAptProxy builds every apt workload once, untimed, so that the timed
// runs all find their packages in apt-cacher-ng. It returns notes about
// warm-ups that failed.
func (h *harness) warmAptProxy(ctx context.Context, ws []workload) []string {
	var notes []string
	seen := map[string]bool{}
	for _, w := range ws {
		if !w.apt || seen[w.dir] {
			continue
		}
		seen[w.dir] = true
		var errs []string
		for _, name := range []string{"kiln", "buildah-overlay"} {
			b, _ := builderByName(name)
			h.logf("%s: warming the apt proxy with an untimed %s build", w.name, b.name)
			rd, err := h.newRunDir(w, "warm", w.name, b.name)
			if err == nil {
				res := h.build(ctx, b, w, rd, "warm", h.aptArgs(w), nil)
				err = res.err
				h.removeRunDir(rd)
			}
			if err == nil {
				errs = nil
				break
			}
			errs = append(errs, err.Error())
		}
		if len(errs) > 0 {
			notes = append(notes, fmt.Sprintf("%s: warming apt-cacher-ng failed, timed runs may include downloads: %s", w.name, strings.Join(errs, "; ")))
		}
	}
	return notes
}

// finish fills m from a build: wall time, memory, kiln's RUN time and
// overhead, disk use of the store and the image's sizes.
func (h *harness) finish(ctx context.Context, m *measurement, b builder, w workload, rd runDir, res buildResult) (layoutImage, bool) {
	m.WallSeconds, m.PeakRSSBytes, m.PeakOwnRSSBytes, m.Log = res.wall.Seconds(), res.peakRSS, res.peakOwnRSS, res.log
	if res.err != nil {
		m.Error = res.err.Error()
		h.logf("%s: %s run %d: %v", m.Workload, b.name, m.Run, res.err)
		return layoutImage{}, false
	}
	if res.runSeconds != nil {
		m.RunSeconds = res.runSeconds
		m.OverheadSeconds = ptr(m.WallSeconds - *res.runSeconds)
	}
	m.CommitSeconds, m.LastCommitSeconds = res.commitSeconds, res.lastCommitSeconds
	if du, err := diskUsage(rd.store); err != nil {
		m.Warnings = append(m.Warnings, err.Error())
	} else {
		m.DiskBytes = &du
	}
	img, err := h.imageOf(ctx, b, w, rd, res)
	if err == nil {
		var c, u int64
		if c, u, err = img.sizes(h.sizes); err == nil {
			m.CompressedBytes, m.UncompressedBytes = &c, &u
		}
	}
	if err != nil {
		m.Warnings = append(m.Warnings, "image size: "+err.Error())
		return img, false
	}
	return img, true
}

// report logs one finished measurement.
func (h *harness) report(m measurement) {
	if m.Error != "" {
		return
	}
	line := fmt.Sprintf("%s: %s run %d: %.1fs", m.Workload, m.Builder, m.Run, m.WallSeconds)
	if m.OverheadSeconds != nil {
		line += fmt.Sprintf(" (RUN %.1fs, overhead %.1fs)", *m.RunSeconds, *m.OverheadSeconds)
	}
	line += ", peak RSS " + formatBytes(m.PeakRSSBytes)
	if m.DiskBytes != nil {
		line += ", disk " + formatBytes(*m.DiskBytes)
	}
	if m.CompressedBytes != nil {
		line += fmt.Sprintf(", image %s (%s uncompressed)", formatBytes(*m.CompressedBytes), formatBytes(*m.UncompressedBytes))
	}
	if m.FloorZstdSeconds != nil && m.FloorPigzSeconds != nil {
		line += fmt.Sprintf(", floor zstd %.1fs pigz %.1fs", *m.FloorZstdSeconds, *m.FloorPigzSeconds)
	}
	for _, warn := range m.Warnings {
		line += "; warning: " + warn
	}
	h.logf("%s", line)
}

// measureStandard is one cold build of w by b in a fresh store. For kiln it
// also times the floor over the layers the build added.
func (h *harness) measureStandard(ctx context.Context, w workload, b builder, run int) measurement {
	m := measurement{Workload: w.name, Builder: b.name, Run: run, Base: w.base, Baseline: w.baseline}
	rd, err := h.newRunDir(w, w.name, b.name, fmt.Sprint(run))
	defer h.removeRunDir(rd)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	res := h.build(ctx, b, w, rd, "build", h.aptArgs(w), nil)
	img, ok := h.finish(ctx, &m, b, w, rd, res)
	if ok && b.kiln && !w.baseline {
		if err := h.measureFloor(ctx, &m, w, rd, img); err != nil {
			m.Warnings = append(m.Warnings, err.Error())
		}
	}
	h.report(m)
	return m
}

// measureFloor times tar | zstd and tar | pigz over the layer directories
// kiln's build added to its base image.
func (h *harness) measureFloor(ctx context.Context, m *measurement, w workload, rd runDir, img layoutImage) error {
	dirs, err := ownLayerDirs(rd.store, img, w.base)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	comps := floorCompressors()
	for _, name := range []string{"zstd", "pigz"} {
		d, err := timeFloor(ctx, dirs, comps[name])
		if err != nil {
			return err
		}
		if name == "zstd" {
			m.FloorZstdSeconds = ptr(d.Seconds())
		} else {
			m.FloorPigzSeconds = ptr(d.Seconds())
		}
	}
	return nil
}

// changeSource appends a comment to file in the build context: a one-file
// source change that invalidates the COPY step and everything after it.
func changeSource(contextDir, file, note string) error {
	path := filepath.Join(contextDir, file)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("changing %s: %w", path, err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "\n// %s\n", note); err != nil {
		return fmt.Errorf("changing %s: %w", path, err)
	}
	return f.Close()
}

// registryCacheFlags are the flags that export (to) or import (from) the
// registry build cache of the rebuild workload.
func registryCacheFlags(b builder, export bool) []string {
	if b.kiln {
		const ref = "127.0.0.1:5000/bench/cache-gcc"
		if export {
			return []string{"--cache-to", "type=registry,ref=" + ref + ",mode=max"}
		}
		return []string{"--cache-from", "type=registry,ref=" + ref}
	}
	const repo = "127.0.0.1:5000/bench/buildah-cache"
	if export {
		return []string{"--cache-to", repo}
	}
	return []string{"--cache-from", repo}
}

// measureRebuild measures the two rebuilds of the gcc workload with b:
//   - rebuild-warm: after a cold build, hello.c changes and the image is
//     rebuilt in the same store (only COPY and the compile step run);
//   - rebuild-registry: a build exports its cache to the registry, the store
//     is emptied, and the rebuild imports that cache (nothing runs).
func (h *harness) measureRebuild(ctx context.Context, w workload, b builder, run int) (warm, fromRegistry measurement) {
	warm = h.measureWarmRebuild(ctx, w, b, run)
	h.report(warm)
	fromRegistry = h.measureRegistryRebuild(ctx, w, b, run)
	h.report(fromRegistry)
	return warm, fromRegistry
}

func (h *harness) measureWarmRebuild(ctx context.Context, w workload, b builder, run int) measurement {
	m := measurement{Workload: "rebuild-warm", Builder: b.name, Run: run, Base: w.base}
	rd, err := h.newRunDir(w, m.Workload, b.name, fmt.Sprint(run))
	defer h.removeRunDir(rd)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	first := h.build(ctx, b, w, rd, "first", h.aptArgs(w), nil)
	if first.err != nil {
		m.Error, m.Log = "the first build: "+first.err.Error(), first.log
		return m
	}
	m.PrepSeconds = ptr(first.wall.Seconds())
	if err := changeSource(rd.context, w.changeFile, fmt.Sprintf("changed by the benchmark before rebuild %d", run)); err != nil {
		m.Error = err.Error()
		return m
	}
	res := h.build(ctx, b, w, rd, "rebuild", h.aptArgs(w), nil)
	h.finish(ctx, &m, b, w, rd, res)
	return m
}

func (h *harness) measureRegistryRebuild(ctx context.Context, w workload, b builder, run int) measurement {
	m := measurement{Workload: "rebuild-registry", Builder: b.name, Run: run, Base: w.base}
	rd, err := h.newRunDir(w, m.Workload, b.name, fmt.Sprint(run))
	defer h.removeRunDir(rd)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	export := h.build(ctx, b, w, rd, "export", h.aptArgs(w), registryCacheFlags(b, true))
	if export.err != nil {
		m.Error, m.Log = "the build exporting the cache: "+export.err.Error(), export.log
		return m
	}
	m.PrepSeconds = ptr(export.wall.Seconds())
	if err := h.resetStore(rd); err != nil {
		m.Error = err.Error()
		return m
	}
	res := h.build(ctx, b, w, rd, "import", h.aptArgs(w), registryCacheFlags(b, false))
	h.finish(ctx, &m, b, w, rd, res)
	if m.Error == "" && m.RunSeconds != nil && *m.RunSeconds > 0 {
		m.Warnings = append(m.Warnings, fmt.Sprintf("%.1fs were spent in RUN steps: not every step came from the cache", *m.RunSeconds))
	}
	if m.Error == "" && !b.kiln {
		if data, err := os.ReadFile(res.log); err == nil && !strings.Contains(string(data), "Using cache") {
			m.Warnings = append(m.Warnings, "buildah used no cached step: the rebuild ran every step")
		}
	}
	return m
}
