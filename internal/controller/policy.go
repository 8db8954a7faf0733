package controller

import (
	"sort"
	"strconv"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// buildNumber is a build's number within its BuildConfig, 0 for a build created on its own.
func buildNumber(b *kilnv1.Build) int64 {
	n, _ := strconv.ParseInt(b.Annotations[kilnv1.BuildNumberAnnotation], 10, 64)
	return n
}

// byNumber sorts builds oldest first.
func byNumber(builds []kilnv1.Build) {
	sort.SliceStable(builds, func(i, j int) bool { return buildNumber(&builds[i]) < buildNumber(&builds[j]) })
}

// admit applies a run policy to the builds of one BuildConfig: which New builds may start now,
// and which queued builds a newer one supersedes (SerialLatestOnly).
func admit(policy kilnv1.RunPolicy, builds []kilnv1.Build) (start, supersede []string) {
	byNumber(builds)
	var queued []*kilnv1.Build
	active := false
	for i := range builds {
		b := &builds[i]
		switch {
		case b.Spec.Cancelled || b.Status.Phase.Final():
		case b.Status.Phase == kilnv1.BuildPhasePending || b.Status.Phase == kilnv1.BuildPhaseRunning:
			active = true
		default:
			queued = append(queued, b)
		}
	}
	if len(queued) == 0 {
		return nil, nil
	}
	switch policy {
	case kilnv1.RunPolicyParallel:
		for _, b := range queued {
			start = append(start, b.Name)
		}
		return start, nil
	case kilnv1.RunPolicySerialLatestOnly:
		for _, b := range queued[:len(queued)-1] {
			supersede = append(supersede, b.Name)
		}
		if !active {
			start = []string{queued[len(queued)-1].Name}
		}
		return start, supersede
	default: // Serial
		if !active {
			start = []string{queued[0].Name}
		}
		return start, nil
	}
}

// prune returns the final builds beyond the history limits, oldest first: complete builds
// beyond successful, failed, errored and cancelled ones beyond failed.
func prune(builds []kilnv1.Build, successful, failed int32) []string {
	byNumber(builds)
	var ok, bad []string
	for i := range builds {
		switch builds[i].Status.Phase {
		case kilnv1.BuildPhaseComplete:
			ok = append(ok, builds[i].Name)
		case kilnv1.BuildPhaseFailed, kilnv1.BuildPhaseError, kilnv1.BuildPhaseCancelled:
			bad = append(bad, builds[i].Name)
		}
	}
	var out []string
	if n := len(ok) - int(successful); n > 0 {
		out = append(out, ok[:n]...)
	}
	if n := len(bad) - int(failed); n > 0 {
		out = append(out, bad[:n]...)
	}
	return out
}
