package controller

import (
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// outcome is what a build pod says about its build.
type outcome struct {
	phase   kilnv1.BuildPhase
	reason  kilnv1.BuildReason
	message string
	// started is when the builder container started running.
	started *metav1.Time
	// fetch is the source fetch's stage, once the init container ended.
	fetch *kilnv1.StageInfo
	// result is the builder's report, once it ended.
	result *kilnv1.BuildResult
}

// imagePullReasons are the waiting reasons of a container whose image cannot be pulled.
var imagePullReasons = map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true}

// podOutcome reads the build's phase, and for failures its reason, from its pod.
func podOutcome(pod *corev1.Pod) outcome {
	switch pod.Status.Reason {
	case "Evicted":
		return outcome{phase: kilnv1.BuildPhaseError, reason: kilnv1.ReasonPodEvicted, message: pod.Status.Message}
	case "DeadlineExceeded":
		return outcome{phase: kilnv1.BuildPhaseFailed, reason: kilnv1.ReasonDeadlineExceeded, message: pod.Status.Message}
	}
	o := outcome{phase: kilnv1.BuildPhasePending}
	for _, cs := range pod.Status.InitContainerStatuses {
		if cs.Name != fetchContainer {
			continue
		}
		if w := cs.State.Waiting; w != nil && imagePullReasons[w.Reason] {
			return outcome{phase: kilnv1.BuildPhaseFailed, reason: kilnv1.ReasonPullBuilderImageFailed, message: w.Message}
		}
		if t := cs.State.Terminated; t != nil {
			if t.ExitCode != 0 {
				return outcome{phase: kilnv1.BuildPhaseFailed, reason: kilnv1.ReasonFetchSourceFailed, message: firstLine(t.Message, t.Reason)}
			}
			start := t.StartedAt
			o.fetch = &kilnv1.StageInfo{Name: kilnv1.StageFetchInputs, StartTime: &start,
				DurationMilliseconds: t.FinishedAt.Sub(t.StartedAt.Time).Milliseconds()}
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != buildContainer {
			continue
		}
		switch {
		case cs.State.Waiting != nil && imagePullReasons[cs.State.Waiting.Reason]:
			return outcome{phase: kilnv1.BuildPhaseFailed, reason: kilnv1.ReasonPullBuilderImageFailed, message: cs.State.Waiting.Message}
		case cs.State.Running != nil:
			started := cs.State.Running.StartedAt
			o.phase, o.started = kilnv1.BuildPhaseRunning, &started
		case cs.State.Terminated != nil:
			t := cs.State.Terminated
			started := t.StartedAt
			o.started = &started
			o.result = parseResult(t.Message)
			switch {
			case t.Reason == "OOMKilled":
				o.phase, o.reason = kilnv1.BuildPhaseFailed, kilnv1.ReasonOutOfMemoryKilled
				o.message = "the builder ran out of memory; raise resources.limits.memory"
			case t.ExitCode == 0:
				o.phase = kilnv1.BuildPhaseComplete
			default:
				o.phase, o.reason, o.message = kilnv1.BuildPhaseFailed, kilnv1.ReasonBuildFailed, firstLine(t.Message, t.Reason)
				if o.result != nil && o.result.Reason != "" {
					o.reason, o.message = o.result.Reason, o.result.Message
				}
			}
		}
	}
	if o.phase == kilnv1.BuildPhasePending && pod.Status.Phase == corev1.PodFailed {
		return outcome{phase: kilnv1.BuildPhaseError, reason: kilnv1.ReasonUnknown, message: firstLine(pod.Status.Message, pod.Status.Reason)}
	}
	return o
}

// parseResult reads the builder's termination message; nil when it is not a result.
func parseResult(msg string) *kilnv1.BuildResult {
	var r kilnv1.BuildResult
	if msg == "" || json.Unmarshal([]byte(msg), &r) != nil {
		return nil
	}
	return &r
}

// firstLine is the first non-empty of the candidates, cut to one line.
func firstLine(candidates ...string) string {
	for _, c := range candidates {
		if c = strings.TrimSpace(c); c != "" {
			line, _, _ := strings.Cut(c, "\n")
			return line
		}
	}
	return ""
}
