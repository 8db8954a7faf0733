package main

import (
	"fmt"
	"sort"
)

// summary is the median, minimum and maximum of some runs.
type summary struct {
	Median, Min, Max float64
	N                int
}

// summarize returns the summary of xs, or false when xs is empty. The median
// of an even number of values is the mean of the two middle ones.
func summarize(xs []float64) (summary, bool) {
	if len(xs) == 0 {
		return summary{}, false
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return summary{Median: med, Min: s[0], Max: s[n-1], N: n}, true
}

// formatBytes writes n in binary units for logs and notes.
func formatBytes(n int64) string {
	switch {
	case n >= gib:
		return fmt.Sprintf("%.2f GiB", float64(n)/float64(gib))
	case n >= mib:
		return fmt.Sprintf("%.1f MiB", float64(n)/float64(mib))
	case n >= 1024:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	}
	return fmt.Sprintf("%d B", n)
}
