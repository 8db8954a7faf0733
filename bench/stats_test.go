package main

import "testing"

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want summary
	}{
		{"one", []float64{4}, summary{Median: 4, Min: 4, Max: 4, N: 1}},
		{"odd", []float64{3, 1, 2}, summary{Median: 2, Min: 1, Max: 3, N: 3}},
		{"even", []float64{10, 1, 4, 2}, summary{Median: 3, Min: 1, Max: 10, N: 4}},
		{"equal", []float64{5, 5, 5}, summary{Median: 5, Min: 5, Max: 5, N: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			got, ok := summarize(tc.in)
			if !ok || got != tc.want {
				t.Errorf("summarize(%v) = %+v, %v; want %+v", tc.in, got, ok, tc.want)
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Fatalf("summarize reordered its input: %v", tc.in)
				}
			}
		})
	}
	if _, ok := summarize(nil); ok {
		t.Error("summarize(nil) reported a summary")
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{
		12:          "12 B",
		2048:        "2.0 KiB",
		5 * mib / 2: "2.5 MiB",
		3 * gib:     "3.00 GiB",
	} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}
