package main

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
)

func TestMarkdownTable(t *testing.T) {
	got := markdownTable([]string{"workload", "kiln", "buildah-vfs"}, [][]string{
		{"gcc", "12.3 [11.9–13.0]", "20.1"},
		{"chrony", "n/a", "failed"},
	})
	want := "| workload | kiln | buildah-vfs |\n" +
		"| :--- | ---: | ---: |\n" +
		"| gcc | 12.3 [11.9–13.0] | 20.1 |\n" +
		"| chrony | n/a | failed |\n"
	if got != want {
		t.Errorf("markdownTable:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormatCell(t *testing.T) {
	for _, tc := range []struct {
		name          string
		xs            []float64
		total, failed int
		want          string
	}{
		{"no runs", nil, 0, 0, "—"},
		{"one run", []float64{1.234}, 1, 0, "1.23"},
		{"three runs", []float64{12, 10.5, 11}, 3, 0, "11.0 [10.5–12.0]"},
		{"one failed", []float64{150, 120}, 3, 1, "135 [120–150] (2/3 runs)"},
		{"all failed", nil, 2, 2, "failed"},
		{"not measured", nil, 2, 0, "n/a"},
	} {
		if got := formatCell(tc.xs, tc.total, tc.failed, seconds); got != tc.want {
			t.Errorf("%s: formatCell = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// sampleResults is a small benchmark: two workloads, two builders, two runs.
func sampleResults() *results {
	i := func(v int64) *int64 { return &v }
	f := func(v float64) *float64 { return &v }
	return &results{
		Meta: meta{Date: "2026-01-02 03:04 UTC", Cores: 2, CPU: "test cpu", MemoryBytes: 8 * gib, Kernel: "6.1.0",
			KilnCommit: "abc1234", BuildahVersion: "buildah version 1.28.2", CommandLine: "go run ./bench -runs 2",
			Runs: 2, Builders: []string{"kiln", "buildah-vfs"}, Workloads: []string{"files-10k", "chrony"}, User: "kiln-sub"},
		Measurements: []measurement{
			{Workload: "pull-busybox", Builder: "kiln", Run: 1, Base: busyboxBase, Baseline: true, WallSeconds: 0.25, PeakRSSBytes: mib},
			{Workload: "pull-busybox", Builder: "kiln", Run: 2, Base: busyboxBase, Baseline: true, WallSeconds: 0.35, PeakRSSBytes: mib},
			{Workload: "files-10k", Builder: "kiln", Run: 1, Base: busyboxBase, WallSeconds: 2, RunSeconds: f(1.5), OverheadSeconds: f(0.5),
				CommitSeconds: f(0.2), LastCommitSeconds: f(0.1), PeakRSSBytes: 50 * mib, DiskBytes: i(80 * mib), CompressedBytes: i(mib), UncompressedBytes: i(10 * mib),
				FloorZstdSeconds: f(0.25), FloorPigzSeconds: f(0.5)},
			{Workload: "files-10k", Builder: "buildah-vfs", Run: 1, WallSeconds: 4, PeakRSSBytes: 90 * mib, DiskBytes: i(120 * mib)},
			{Workload: "files-10k", Builder: "kiln", Run: 2, Base: busyboxBase, WallSeconds: 3, RunSeconds: f(2), OverheadSeconds: f(1),
				CommitSeconds: f(0.4), LastCommitSeconds: f(0.3), PeakRSSBytes: 60 * mib, DiskBytes: i(80 * mib), CompressedBytes: i(mib), UncompressedBytes: i(10 * mib),
				FloorZstdSeconds: f(0.25), FloorPigzSeconds: f(0.5)},
			{Workload: "files-10k", Builder: "buildah-vfs", Run: 2, Error: "buildah failed; log: x.log"},
			{Workload: "chrony", Builder: "kiln", Run: 1, WallSeconds: 30, PeakRSSBytes: 200 * mib},
		},
		CacheLookup: []cacheLookupRun{{Run: 1, WallSeconds: 0.8, Requests: 7, ByKind: map[string]int{"GET manifests bench/cache-lookup": 2, "GET blobs busybox": 5}}},
		GoCacheMount: []goCacheMountRun{
			{Builder: "kiln", Run: 1, FirstWallSeconds: 60, SecondWallSeconds: 5, FirstGoBuildSeconds: f(20), SecondGoBuildSeconds: f(2)},
			{Builder: "buildah-vfs", Run: 1, Error: "the first build: exit status 1"},
		},
		Notes: []string{"large skipped: not enough disk"},
	}
}

func TestRenderMarkdown(t *testing.T) {
	md := renderMarkdown(sampleResults())
	for _, want := range []string{
		"- **kiln:** commit abc1234",
		"- **Command:** `go run ./bench -runs 2`",
		"### Wall time (s)\n\n| workload | kiln | buildah-vfs |\n| :--- | ---: | ---: |\n",
		"| pull-busybox | 0.30 [0.25–0.35] | — |\n| files-10k | 2.50 [2.00–3.00] | 4.00 (1/2 runs) |\n| chrony | 30.0 | — |\n",
		"| files-10k | 2.50 [2.00–3.00] | 1.75 [1.50–2.00] | 0.75 [0.50–1.00] | 0.30 [0.30–0.30] | 0.45 [0.20–0.70] | 0.30 [0.20–0.40] | 0.20 [0.10–0.30] | 0.25 [0.25–0.25] | 0.50 [0.50–0.50] |\n| chrony | 30.0 | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |\n",
		"| :--- | ---: | ---: | ---: | ---: | ---: | ---: |\n| files-10k | 1.20× [0.80×–1.60×] | 0.60× [0.40×–0.80×] | 3.00× [2.00×–4.00×] | 1.50× [1.00×–2.00×] | 1.80× [0.80×–2.80×] | 0.90× [0.40×–1.40×] |\n\n",
		"| 1 | 0.80 | 7 | n/a | yes |",
		"| `GET blobs busybox` | 5 |",
		"| kiln | 60.0 | 5.00 | 20.0 | 2.00 | 0.10× |",
		"| buildah-vfs | failed | failed | failed | failed | failed |",
		"- buildah-vfs run 1: the first build: exit status 1",
		"- files-10k, buildah-vfs, run 2: buildah failed; log: x.log",
		"- large skipped: not enough disk",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q; got:\n%s", want, md)
		}
	}
}

func TestRenderChart(t *testing.T) {
	data, err := renderChart(sampleResults())
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("results.png does not decode: %v", err)
	}
	// Three workloads: three rows of three panels.
	if b := img.Bounds(); b.Dx() <= b.Dy() || b.Dy() < 300 {
		t.Errorf("chart is %dx%d, want wider than tall and at least 300 px tall", b.Dx(), b.Dy())
	}
	empty, err := renderChart(&results{})
	if err != nil || empty != nil {
		t.Errorf("renderChart with no measurements = %d bytes, %v; want nothing", len(empty), err)
	}
}

func TestTargets(t *testing.T) {
	md := renderMarkdown(sampleResults())
	for _, want := range []string{
		"## Targets\n",
		"| (overhead − pull) ÷ tar\\|zstd floor | files-10k | 1.80× | ≤ 1.5× | **no** |",
		"| peak RSS, with RUN programs (the highest workload) | chrony | 200 MiB | < 200 MiB | **no** |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("RESULTS.md lacks %q; got:\n%s", want, md)
		}
	}
}
