package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
)

// goBuildMarks finds the start and end times the go-cache-mount step prints
// around `go build` (unix seconds with nanoseconds, from date +%s.%N).
var goBuildMarks = regexp.MustCompile(`BENCH_GO_BUILD_(START|END)=([0-9]+\.[0-9]+)`)

// goBuildSeconds reads the duration of the go build step from a build log:
// the last START and END marks.
func goBuildSeconds(logText string) (float64, error) {
	var start, end float64
	var haveStart, haveEnd bool
	for _, m := range goBuildMarks.FindAllStringSubmatch(logText, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return 0, fmt.Errorf("reading the go build time: %q: %w", m[0], err)
		}
		if m[1] == "START" {
			start, haveStart = v, true
		} else {
			end, haveEnd = v, true
		}
	}
	if !haveStart || !haveEnd || end < start {
		return 0, fmt.Errorf("reading the go build time: no BENCH_GO_BUILD_START/END marks in the log (did the step run?)")
	}
	return end - start, nil
}

// measureGoCacheMount builds the go-cache-mount workload twice with b in one
// store, changing main.go in between, and reads the go build step's time of
// each build from its output.
func (h *harness) measureGoCacheMount(ctx context.Context, w workload, b builder, run int) goCacheMountRun {
	out := goCacheMountRun{Builder: b.name, Run: run}
	rd, err := h.newRunDir(w, w.name, b.name, fmt.Sprint(run))
	defer h.removeRunDir(rd)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	first := h.build(ctx, b, w, rd, "first", h.aptArgs(w), nil)
	out.FirstWallSeconds, out.Log = first.wall.Seconds(), first.log
	if first.err != nil {
		out.Error = "the first build: " + first.err.Error()
		h.logf("%s: %s run %d: %s", w.name, b.name, run, out.Error)
		return out
	}
	if err := changeSource(rd.context, w.changeFile, fmt.Sprintf("changed by the benchmark before rebuild %d", run)); err != nil {
		out.Error = err.Error()
		return out
	}
	second := h.build(ctx, b, w, rd, "second", h.aptArgs(w), nil)
	out.SecondWallSeconds, out.Log = second.wall.Seconds(), second.log
	if second.err != nil {
		out.Error = "the second build: " + second.err.Error()
		h.logf("%s: %s run %d: %s", w.name, b.name, run, out.Error)
		return out
	}
	for _, x := range []struct {
		log string
		dst **float64
	}{{first.log, &out.FirstGoBuildSeconds}, {second.log, &out.SecondGoBuildSeconds}} {
		data, err := os.ReadFile(x.log)
		if err != nil {
			out.Error = fmt.Sprintf("reading the build log: %v", err)
			return out
		}
		s, err := goBuildSeconds(string(data))
		if err != nil {
			out.Error = fmt.Sprintf("%v; log: %s", err, x.log)
			return out
		}
		*x.dst = ptr(s)
	}
	h.logf("%s: %s run %d: go build %.1fs, then %.1fs after one change (builds %.1fs, %.1fs)", w.name, b.name, run,
		*out.FirstGoBuildSeconds, *out.SecondGoBuildSeconds, out.FirstWallSeconds, out.SecondWallSeconds)
	return out
}
