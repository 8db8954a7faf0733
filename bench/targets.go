package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// target is one of the goals, checked against the medians of a run.
type target struct {
	what, workload, measured, goal string
	met                            bool
}

// medianOf is the median of get over the successful measurements ms.
func medianOf(ms []measurement, get func(m measurement) (float64, bool)) (float64, bool) {
	var xs []float64
	for _, m := range ms {
		if m.Error != "" {
			continue
		}
		if v, ok := get(m); ok {
			xs = append(xs, v)
		}
	}
	s, ok := summarize(xs)
	return s.Median, ok
}

func wallOf(m measurement) (float64, bool) { return m.WallSeconds, true }

// checkTargets evaluates every target the measurements allow; the others are left out.
func checkTargets(g grouped, all []measurement) []target {
	var out []target
	pull := kilnPullTimes(all)
	for _, w := range g.workloads {
		kiln := g.cells[w]["kiln"]
		if len(kiln) == 0 || kiln[0].Baseline {
			continue
		}
		kw, ok := medianOf(kiln, wallOf)
		if !ok {
			continue
		}
		for _, peer := range []struct {
			builder string
			limit   float64
			only    []string
		}{{"buildah-overlay", 0.7, nil}, {"buildah-vfs", 0.5, []string{"scipy", "large"}}} {
			if peer.only != nil && !slices.Contains(peer.only, w) {
				continue
			}
			if pw, ok := medianOf(g.cells[w][peer.builder], wallOf); ok && pw > 0 {
				out = append(out, target{"time ÷ " + peer.builder, w, ratio(kw / pw), fmt.Sprintf("≤ %.1f×", peer.limit), kw/pw <= peer.limit})
			}
		}
		less := overheadLessPull(pull)
		if r, ok := medianOf(kiln, quotient(less, func(m measurement) *float64 { return m.FloorZstdSeconds })); ok {
			out = append(out, target{"(overhead − pull) ÷ tar\\|zstd floor", w, ratio(r), "≤ 1.5×", r <= 1.5})
		}
		if kd, ok := medianOf(kiln, bytesIn(func(m measurement) *int64 { return m.DiskBytes })); ok {
			if od, ok := medianOf(g.cells[w]["buildah-overlay"], bytesIn(func(m measurement) *int64 { return m.DiskBytes })); ok && od > 0 {
				out = append(out, target{"disk ÷ buildah-overlay", w, ratio(kd / od), "≤ 1.0×", kd <= od})
			}
		}
		if w == "files-500k" {
			if c, ok := medianOf(kiln, optional(func(m measurement) *float64 { return m.LastCommitSeconds })); ok {
				out = append(out, target{"commit of a RUN touching one file", w, seconds(c) + " s", "< 1 s", c < 1})
			}
		}
		switch w {
		case "rebuild-warm":
			if o, ok := medianOf(kiln, optional(func(m measurement) *float64 { return m.OverheadSeconds })); ok {
				out = append(out, target{"warm rebuild beyond its changed steps' RUN", w, seconds(o) + " s", "< 1 s", o < 1})
			}
		case "rebuild-registry":
			out = append(out, target{"fully cached rebuild from a registry cache", w, seconds(kw) + " s", "< 3 s", kw < 3})
		}
	}
	// Memory: the worst workload, for the builder's own processes and for the whole tree.
	for _, mem := range []struct {
		what string
		get  func(m measurement) (float64, bool)
	}{{"peak RSS, kiln's own processes", ownRSSMetric().value}, {"peak RSS, with RUN programs", rssMetric().value}} {
		worst, worstW := -1.0, ""
		for _, w := range g.workloads {
			if v, ok := medianOf(g.cells[w]["kiln"], mem.get); ok && v > worst {
				worst, worstW = v, w
			}
		}
		if worstW != "" {
			out = append(out, target{mem.what + " (the highest workload)", worstW, mebibytes(worst) + " MiB", "< 200 MiB", worst < 200})
		}
	}
	return out
}

// writeTargets writes the targets table: every goal the run could check, met or by how much not.
func writeTargets(b *strings.Builder, g grouped, all []measurement) {
	ts := checkTargets(g, all)
	if len(ts) == 0 {
		return
	}
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].what < ts[j].what })
	var rows [][]string
	missed := 0
	for _, t := range ts {
		met := "yes"
		if !t.met {
			met, missed = "**no**", missed+1
		}
		rows = append(rows, []string{t.what, t.workload, t.measured, t.goal, met})
	}
	fmt.Fprintf(b, "## Targets\n\nThe issue's goals, from the medians above: %d of %d met.\n\n%s\n", len(ts)-missed, len(ts),
		markdownTable([]string{"target", "workload", "measured", "goal", "met"}, rows))
}
