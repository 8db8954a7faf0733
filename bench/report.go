package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// metric is one number of a measurement, shown as one table and one chart.
type metric struct {
	title string
	// value extracts the number, or false when the measurement has none.
	value  func(m measurement) (float64, bool)
	format func(float64) string
}

func seconds(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	if v >= 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func mebibytes(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func ratio(v float64) string { return fmt.Sprintf("%.2f×", v) }

// bytesIn makes a metric value in MiB from an optional byte count.
func bytesIn(get func(m measurement) *int64) func(m measurement) (float64, bool) {
	return func(m measurement) (float64, bool) {
		if p := get(m); p != nil {
			return float64(*p) / float64(mib), true
		}
		return 0, false
	}
}

// optional makes a metric value from an optional number.
func optional(get func(m measurement) *float64) func(m measurement) (float64, bool) {
	return func(m measurement) (float64, bool) {
		if p := get(m); p != nil {
			return *p, true
		}
		return 0, false
	}
}

// quotient is a/b per measurement, when both exist and b > 0.
func quotient(a, b func(m measurement) *float64) func(m measurement) (float64, bool) {
	return func(m measurement) (float64, bool) {
		x, y := a(m), b(m)
		if x == nil || y == nil || *y <= 0 {
			return 0, false
		}
		return *x / *y, true
	}
}

// The metrics of the main tables; the first three are also charted.
func wallMetric() metric {
	return metric{"Wall time (s)", func(m measurement) (float64, bool) { return m.WallSeconds, true }, seconds}
}

func rssMetric() metric {
	return metric{"Peak RSS of the builder's process tree (MiB)", func(m measurement) (float64, bool) {
		return float64(m.PeakRSSBytes) / float64(mib), m.PeakRSSBytes > 0
	}, mebibytes}
}

// ownRSSMetric is the builder without its RUN steps' programs: the processes running the
// builder's own binary.
func ownRSSMetric() metric {
	return metric{"Peak RSS of the builder's own processes, RUN programs excluded (MiB)", func(m measurement) (float64, bool) {
		return float64(m.PeakOwnRSSBytes) / float64(mib), m.PeakOwnRSSBytes > 0
	}, mebibytes}
}

func diskMetric() metric {
	return metric{"Store disk use after the build (MiB)", bytesIn(func(m measurement) *int64 { return m.DiskBytes }), mebibytes}
}

func mainMetrics() []metric {
	return []metric{
		wallMetric(), rssMetric(), ownRSSMetric(), diskMetric(),
		{"Image size, compressed layers (MiB)", bytesIn(func(m measurement) *int64 { return m.CompressedBytes }), mebibytes},
		{"Image size, uncompressed layers (MiB)", bytesIn(func(m measurement) *int64 { return m.UncompressedBytes }), mebibytes},
	}
}

// kilnTimeMetrics and kilnRatioMetrics are the columns of the two tables
// about kiln's own time. pull holds the median wall time of kiln's baseline
// builds (the base image alone) by base image; "excluding the pull" values
// exist only for builds with a floor (cold builds of a workload).
func kilnTimeMetrics(pull map[string]float64) []metric {
	run := func(m measurement) *float64 { return m.RunSeconds }
	over := func(m measurement) *float64 { return m.OverheadSeconds }
	return []metric{
		wallMetric(),
		{"RUN (s)", optional(run), seconds},
		{"overhead = wall − RUN (s)", optional(over), seconds},
		{"base image pull (s)", optional(pullOf(pull)), seconds},
		{"overhead − pull (s)", optional(overheadLessPull(pull)), seconds},
		{"commits (s)", optional(func(m measurement) *float64 { return m.CommitSeconds }), seconds},
		{"last step's commit (s)", optional(func(m measurement) *float64 { return m.LastCommitSeconds }), seconds},
		{"floor tar\\|zstd -T0 -1 (s)", optional(func(m measurement) *float64 { return m.FloorZstdSeconds }), seconds},
		{"floor tar\\|pigz (s)", optional(func(m measurement) *float64 { return m.FloorPigzSeconds }), seconds},
	}
}

func kilnRatioMetrics(pull map[string]float64) []metric {
	over := func(m measurement) *float64 { return m.OverheadSeconds }
	zstd := func(m measurement) *float64 { return m.FloorZstdSeconds }
	pigz := func(m measurement) *float64 { return m.FloorPigzSeconds }
	less := overheadLessPull(pull)
	commit := func(m measurement) *float64 { return m.CommitSeconds }
	return []metric{
		{"commits ÷ zstd floor", quotient(commit, zstd), ratio},
		{"commits ÷ pigz floor", quotient(commit, pigz), ratio},
		{"overhead ÷ zstd floor", quotient(over, zstd), ratio},
		{"overhead ÷ pigz floor", quotient(over, pigz), ratio},
		{"(overhead − pull) ÷ zstd floor", quotient(less, zstd), ratio},
		{"(overhead − pull) ÷ pigz floor", quotient(less, pigz), ratio},
	}
}

// pullOf is the median pull time of a cold build's base image.
func pullOf(pull map[string]float64) func(m measurement) *float64 {
	return func(m measurement) *float64 {
		p, ok := pull[m.Base]
		if !ok || m.FloorZstdSeconds == nil {
			return nil
		}
		return &p
	}
}

// overheadLessPull is kiln's overhead without the median pull of its base.
func overheadLessPull(pull map[string]float64) func(m measurement) *float64 {
	return func(m measurement) *float64 {
		p := pullOf(pull)(m)
		if p == nil || m.OverheadSeconds == nil {
			return nil
		}
		return ptr(*m.OverheadSeconds - *p)
	}
}

// kilnPullTimes is the median wall time of kiln's baseline builds by base image.
func kilnPullTimes(ms []measurement) map[string]float64 {
	walls := map[string][]float64{}
	for _, m := range ms {
		if m.Baseline && m.Builder == "kiln" && m.Error == "" {
			walls[m.Base] = append(walls[m.Base], m.WallSeconds)
		}
	}
	out := map[string]float64{}
	for base, xs := range walls {
		if s, ok := summarize(xs); ok {
			out[base] = s.Median
		}
	}
	return out
}

// formatCell writes "median [min–max]" of the values xs of total runs, of
// which failed failed; "(n/total)" says when some runs gave no value.
func formatCell(xs []float64, total, failed int, format func(float64) string) string {
	if total == 0 {
		return "—"
	}
	s, ok := summarize(xs)
	if !ok {
		if failed == total {
			return "failed"
		}
		return "n/a"
	}
	out := format(s.Median)
	if s.N > 1 {
		out += " [" + format(s.Min) + "–" + format(s.Max) + "]"
	}
	if s.N < total {
		out += fmt.Sprintf(" (%d/%d runs)", s.N, total)
	}
	return out
}

// metricCell summarizes mt over the measurements of one workload and builder.
func metricCell(ms []measurement, mt metric) string {
	var xs []float64
	failed := 0
	for _, m := range ms {
		if m.Error != "" {
			failed++
			continue
		}
		if v, ok := mt.value(m); ok {
			xs = append(xs, v)
		}
	}
	return formatCell(xs, len(ms), failed, mt.format)
}

// markdownTable renders a GitHub Markdown table: the first column left
// aligned, the others right aligned.
func markdownTable(header []string, rows [][]string) string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---:"
		if i == 0 {
			sep[i] = ":---"
		}
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

// grouped indexes measurements by workload and builder, keeping the order in
// which workloads first appear.
type grouped struct {
	workloads []string
	cells     map[string]map[string][]measurement
}

func groupMeasurements(ms []measurement) grouped {
	g := grouped{cells: map[string]map[string][]measurement{}}
	for _, m := range ms {
		if g.cells[m.Workload] == nil {
			g.cells[m.Workload] = map[string][]measurement{}
			g.workloads = append(g.workloads, m.Workload)
		}
		g.cells[m.Workload][m.Builder] = append(g.cells[m.Workload][m.Builder], m)
	}
	return g
}

// renderMarkdown writes RESULTS.md.
func renderMarkdown(r *results) string {
	var b strings.Builder
	writeHeader(&b, r.Meta)
	g := groupMeasurements(r.Measurements)
	if len(g.workloads) > 0 {
		b.WriteString("## Builds\n\nEach cell: median [min–max] over the runs. ![charts](results.png)\n\n")
		for _, mt := range mainMetrics() {
			header := append([]string{"workload"}, r.Meta.Builders...)
			var rows [][]string
			for _, w := range g.workloads {
				row := []string{w}
				for _, bn := range r.Meta.Builders {
					row = append(row, metricCell(g.cells[w][bn], mt))
				}
				rows = append(rows, row)
			}
			fmt.Fprintf(&b, "### %s\n\n%s\n", mt.title, markdownTable(header, rows))
		}
		writeKilnOverhead(&b, g, r.Measurements)
		writeTargets(&b, g, r.Measurements)
	}
	writeCacheLookup(&b, r.CacheLookup)
	writeGoCacheMount(&b, r.GoCacheMount, r.Meta.Builders)
	writeProblems(&b, r)
	writeMethod(&b, r.Meta.FreshFS)
	return b.String()
}

func writeHeader(b *strings.Builder, m meta) {
	fmt.Fprintf(b, "# kiln and buildah: benchmark results\n\n")
	fmt.Fprintf(b, "Written by the benchmark harness (`bench/`) from its own measurements; rerun it to refresh them.\n\n")
	fmt.Fprintf(b, "- **Date:** %s\n", m.Date)
	fmt.Fprintf(b, "- **Machine:** %d cores (%s), %s RAM, kernel %s\n", m.Cores, m.CPU, formatBytes(m.MemoryBytes), m.Kernel)
	compression := "layers of the image, which stays in the store, kept uncompressed (its default, as buildah's); " +
		"compressed after the build, untimed, to measure image sizes"
	if m.KilnCompression != "" {
		compression = "layers compressed in the build, `--compression " + m.KilnCompression + " --disable-compression=false`"
	}
	fmt.Fprintf(b, "- **kiln:** commit %s; %s\n", m.KilnCommit, compression)
	fmt.Fprintf(b, "- **buildah:** %s\n", m.BuildahVersion)
	fmt.Fprintf(b, "- **Command:** `%s`\n", m.CommandLine)
	fmt.Fprintf(b, "- **Runs:** %d per workload and builder, builders alternating within each run (%s), all as user `%s`\n\n",
		m.Runs, strings.Join(m.Builders, ", "), m.User)
}

func writeKilnOverhead(b *strings.Builder, g grouped, all []measurement) {
	pull := kilnPullTimes(all)
	hasFloor := func(ms []measurement) bool {
		for _, m := range ms {
			if m.FloorZstdSeconds != nil {
				return true
			}
		}
		return false
	}
	table := func(mts []metric, onlyWithFloor bool) string {
		header := []string{"workload"}
		for _, mt := range mts {
			header = append(header, mt.title)
		}
		var rows [][]string
		for _, w := range g.workloads {
			ms := g.cells[w]["kiln"]
			if len(ms) == 0 || ms[0].Baseline || (onlyWithFloor && !hasFloor(ms)) {
				continue
			}
			row := []string{w}
			for _, mt := range mts {
				row = append(row, metricCell(ms, mt))
			}
			rows = append(rows, row)
		}
		if len(rows) == 0 {
			return ""
		}
		return markdownTable(header, rows)
	}
	times := table(kilnTimeMetrics(pull), false)
	if times == "" {
		return
	}
	b.WriteString("### kiln's own time against the floor\n\n")
	b.WriteString("kiln's overhead is its wall time minus the time spent inside RUN processes (`runSeconds` of `--metadata-file`); " +
		"it includes pulling the base image into the empty store, which the `pull-*` rows measure alone (median of kiln's runs). " +
		"The floor is the time standard tools take to archive and compress the layers the build added, over kiln's unpacked " +
		"layer directories: `tar -cf - -C LAYER . | zstd -T0 -1 > /dev/null`, and the same with `pigz` (default level, as kiln's gzip). " +
		"Commits are the part of the overhead that does what the floor does: each step's diff archived and hashed, and written as " +
		"a compressed blob when the build compresses (-kiln-compression) " +
		"(`steps[].commitSeconds` of `--metadata-file`); the last step's is listed alone because on `files-500k` that step " +
		"touches one file over 500k (target: under 1 s). Rebuild rows have no floor.\n\n")
	b.WriteString(times + "\n")
	if ratios := table(kilnRatioMetrics(pull), true); ratios != "" {
		b.WriteString("kiln's overhead as a multiple of the floor:\n\n" + ratios + "\n")
	}
}

func writeCacheLookup(b *strings.Builder, runs []cacheLookupRun) {
	if len(runs) == 0 {
		return
	}
	b.WriteString("## cache-lookup: a fully cached rebuild from a registry cache (kiln)\n\n")
	b.WriteString("A 10-step Dockerfile is built once with `--cache-to type=registry,ref=...,mode=max`; then, into an empty store, " +
		"again with `--cache-from`. The base image and the cache both go through a counting proxy in front of the registry, " +
		"so the requests counted are all the rebuild made. Target: under 2 s.\n\n")
	var wall, reqs, runSecs []float64
	failed := 0
	var firstOK *cacheLookupRun
	for i, r := range runs {
		if r.Error != "" {
			failed++
			continue
		}
		wall = append(wall, r.WallSeconds)
		reqs = append(reqs, float64(r.Requests))
		if r.RunSeconds != nil {
			runSecs = append(runSecs, *r.RunSeconds)
		}
		if firstOK == nil {
			firstOK = &runs[i]
		}
	}
	target := "n/a"
	if s, ok := summarize(wall); ok {
		target = "no"
		if s.Median < 2 {
			target = "yes"
		}
	}
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	b.WriteString(markdownTable(
		[]string{"runs", "rebuild wall time (s)", "registry requests", "time in RUN (s)", "median under 2 s"},
		[][]string{{fmt.Sprint(len(runs)), formatCell(wall, len(runs), failed, seconds), formatCell(reqs, len(runs), failed, count),
			formatCell(runSecs, len(runs), failed, seconds), target}}) + "\n")
	if firstOK != nil {
		kinds := make([]string, 0, len(firstOK.ByKind))
		for k := range firstOK.ByKind {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var rows [][]string
		for _, k := range kinds {
			rows = append(rows, []string{"`" + k + "`", fmt.Sprint(firstOK.ByKind[k])})
		}
		fmt.Fprintf(b, "Requests of run %d by kind:\n\n%s\n", firstOK.Run, markdownTable([]string{"request", "count"}, rows))
	}
}

func writeGoCacheMount(b *strings.Builder, runs []goCacheMountRun, builders []string) {
	if len(runs) == 0 {
		return
	}
	b.WriteString("## go-cache-mount: `RUN --mount=type=cache` for the Go build cache\n\n")
	b.WriteString("A Go program is built with `RUN --mount=type=cache,target=/root/.cache/go-build go build`, then `main.go` " +
		"changes and the image is rebuilt in the same store. The go build step prints its own start and end times; " +
		"the ratio is the second go build's time over the first's.\n\n")
	header := []string{"builder", "first build (s)", "rebuild (s)", "go build, first (s)", "go build, after the change (s)", "ratio"}
	var rows [][]string
	var errs []string
	for _, bn := range builders {
		var fw, sw, fg, sg, rt []float64
		total, failed := 0, 0
		for _, r := range runs {
			if r.Builder != bn {
				continue
			}
			total++
			if r.Error != "" {
				failed++
				errs = append(errs, fmt.Sprintf("%s run %d: %s", bn, r.Run, r.Error))
				continue
			}
			fw, sw = append(fw, r.FirstWallSeconds), append(sw, r.SecondWallSeconds)
			if r.FirstGoBuildSeconds != nil && r.SecondGoBuildSeconds != nil {
				fg, sg = append(fg, *r.FirstGoBuildSeconds), append(sg, *r.SecondGoBuildSeconds)
				if *r.FirstGoBuildSeconds > 0 {
					rt = append(rt, *r.SecondGoBuildSeconds / *r.FirstGoBuildSeconds)
				}
			}
		}
		if total == 0 {
			continue
		}
		rows = append(rows, []string{bn, formatCell(fw, total, failed, seconds), formatCell(sw, total, failed, seconds),
			formatCell(fg, total, failed, seconds), formatCell(sg, total, failed, seconds), formatCell(rt, total, failed, ratio)})
	}
	b.WriteString(markdownTable(header, rows) + "\n")
	if len(errs) > 0 {
		b.WriteString("Where a builder shows failed (n/a):\n\n")
		for _, e := range errs {
			fmt.Fprintf(b, "- %s\n", e)
		}
		b.WriteString("\n")
	}
}

func writeProblems(b *strings.Builder, r *results) {
	var lines []string
	lines = append(lines, r.Notes...)
	for _, m := range r.Measurements {
		if m.Error != "" {
			lines = append(lines, fmt.Sprintf("%s, %s, run %d: %s", m.Workload, m.Builder, m.Run, m.Error))
		}
		for _, w := range m.Warnings {
			lines = append(lines, fmt.Sprintf("%s, %s, run %d: warning: %s", m.Workload, m.Builder, m.Run, w))
		}
	}
	for _, c := range r.CacheLookup {
		if c.Error != "" {
			lines = append(lines, fmt.Sprintf("cache-lookup, kiln, run %d: %s", c.Run, c.Error))
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("## Failures, skips and warnings\n\n")
	for _, l := range lines {
		fmt.Fprintf(b, "- %s\n", strings.ReplaceAll(l, "\n", " "))
	}
	b.WriteString("\n")
}

func writeMethod(b *strings.Builder, freshFS bool) {
	b.WriteString(`## How it was measured

- **Builders.** kiln: ` + "`kiln build --root STORE --metadata-file M.json -t bench/NAME CONTEXT`" + `. buildah: ` +
		"`buildah --root R --runroot RR --storage-driver overlay|vfs bud --isolation chroot --layers --pull --tls-verify=false --network host -t bench/NAME CONTEXT`" + `.
  Both run as the unprivileged user through ` + "`setpriv --reuid --regid --init-groups`" + `, with HOME, XDG_RUNTIME_DIR and TMPDIR of their own.
- **Cold store, pull included.** Every run starts from a fresh, empty store; the base image (` + "`localhost:5000/debian:bookworm`" + ` or
  ` + "`localhost:5000/busybox:latest`" + `, from the local registry) is pulled by the timed build, for every builder.
- **Filesystem.** ` + freshFSMethod(freshFS) + `
- **apt** goes through apt-cacher-ng on 127.0.0.1:3142, passed to both builders as ` + "`--build-arg http_proxy=...`" + `; every apt
  workload is built once, untimed, before any timing, so the timed runs find their packages in the cache. RUN steps use the host network.
- **Wall time** runs from starting the builder to its exit. **Peak RSS** is the highest sum of VmRSS over the builder's process and all
  its descendants, sampled every 50 ms from /proc (shared pages count once per process; spikes shorter than 50 ms can be missed);
  the builder's own processes are those of the tree whose /proc/PID/exe is the builder's binary (kiln re-executes itself for
  its sandboxes, buildah for chroot isolation), so the programs RUN steps start (apt, gcc) are left out.
- **Disk** is what du reports for the store after the build: allocated blocks, each hard-linked inode once. kiln's store holds the
  pulled base layer's compressed blob and every layer unpacked (the layers it built have no blob: it keeps them unpacked,
  uncompressed, until they leave the store); buildah's holds its layers (overlay: one diff per layer; vfs: a full copy per layer).
- **Image size** sums the image's layer blobs, base layer included, once each builder has written its image out compressed,
  outside the timed build: buildah with ` + "`buildah push`" + ` to an OCI layout, kiln with a second build, every step from its
  cache, with ` + "`--output type=oci`" + ` (gzip both; with -kiln-compression, kiln's store as the build left it); uncompressed is
  the sum of the decompressed layer tars.
- **rebuild-warm**: a cold build of ` + "`gcc`" + `, then ` + "`hello.c`" + ` changes and the timed rebuild runs in the same store (COPY and the
  compile step run again). **rebuild-registry**: an untimed build exports its cache to 127.0.0.1:5000 (kiln: ` +
		"`--cache-to type=registry,ref=127.0.0.1:5000/bench/cache-gcc,mode=max`" + `; buildah: ` + "`--layers --cache-to 127.0.0.1:5000/bench/buildah-cache`" + `),
  the store is emptied, and the timed rebuild imports it (` + "`--cache-from`" + `).
`)
}

// writeResults writes RESULTS.md, results.json and results.png to dir.
func writeResults(dir string, r *results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing the results: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results.json: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "results.json"), append(data, '\n')); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "RESULTS.md"), []byte(renderMarkdown(r))); err != nil {
		return err
	}
	png, err := renderChart(r)
	if err != nil {
		return err
	}
	if png == nil {
		// Nothing to draw: do not leave a chart of an earlier benchmark.
		if err := os.Remove(filepath.Join(dir, "results.png")); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("removing the old results.png: %w", err)
		}
		return nil
	}
	return writeFileAtomic(filepath.Join(dir, "results.png"), png)
}

// writeFileAtomic writes path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// freshFSMethod says where the runs' stores were.
func freshFSMethod(fresh bool) string {
	if !fresh {
		return "All runs shared -workdir's filesystem (`-fresh-fs=false`): a run can find it slower to create files just after the last run's store was deleted."
	}
	return "Every run had a new ext4 filesystem of its own (`-fresh-fs`, the default): a sparse image under -workdir on a loop device with direct I/O. " +
		"On one shared filesystem, a run that followed the deletion of the last run's store was up to 3 times slower at creating files " +
		"(an ext4 without a journal, as this machine's root, skips inodes deleted in the last 5 to 10 minutes)."
}
