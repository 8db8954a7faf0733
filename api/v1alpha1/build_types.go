package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BuildPhase is where a build is in its life.
// +kubebuilder:validation:Enum=New;Pending;Running;Complete;Failed;Error;Cancelled
type BuildPhase string

// The build phases. Complete, Failed, Error and Cancelled are final.
const (
	// BuildPhaseNew is a build the controller has not acted on yet, or one waiting its turn
	// under the run policy.
	BuildPhaseNew BuildPhase = "New"
	// BuildPhasePending has a pod that has not started running.
	BuildPhasePending BuildPhase = "Pending"
	// BuildPhaseRunning has a running pod.
	BuildPhaseRunning BuildPhase = "Running"
	// BuildPhaseComplete pushed its image.
	BuildPhaseComplete BuildPhase = "Complete"
	// BuildPhaseFailed failed because of its input: the source, the Dockerfile, a RUN step,
	// credentials.
	BuildPhaseFailed BuildPhase = "Failed"
	// BuildPhaseError failed because of the system: the pod was evicted or deleted, the node
	// went away, the controller could not create the pod.
	BuildPhaseError BuildPhase = "Error"
	// BuildPhaseCancelled was cancelled (spec.cancelled, or superseded under SerialLatestOnly).
	BuildPhaseCancelled BuildPhase = "Cancelled"
)

// Final reports whether no further phase follows p.
func (p BuildPhase) Final() bool {
	switch p {
	case BuildPhaseComplete, BuildPhaseFailed, BuildPhaseError, BuildPhaseCancelled:
		return true
	}
	return false
}

// BuildReason explains a phase, in CamelCase.
type BuildReason string

// The build reasons.
const (
	ReasonFetchSourceFailed      BuildReason = "FetchSourceFailed"
	ReasonPullBuilderImageFailed BuildReason = "PullBuilderImageFailed"
	ReasonBuildFailed            BuildReason = "BuildFailed"
	ReasonPushFailed             BuildReason = "PushFailed"
	ReasonOutOfMemoryKilled      BuildReason = "OutOfMemoryKilled"
	ReasonPodEvicted             BuildReason = "PodEvicted"
	ReasonPodDeleted             BuildReason = "PodDeleted"
	ReasonDeadlineExceeded       BuildReason = "DeadlineExceeded"
	ReasonCancelled              BuildReason = "Cancelled"
	ReasonSuperseded             BuildReason = "SupersededByNewerBuild"
	ReasonCannotCreatePod        BuildReason = "CannotCreateBuildPod"
	ReasonInvalidSpec            BuildReason = "InvalidSpec"
	ReasonStrategyNotSupported   BuildReason = "StrategyNotSupported"
	ReasonUnknown                BuildReason = "UnknownFailure"
)

// StageName names a stage of a build, in the order they happen.
type StageName string

// The build stages.
const (
	StageFetchInputs StageName = "FetchInputs"
	StagePullImages  StageName = "PullImages"
	StageBuild       StageName = "Build"
	StagePushImage   StageName = "PushImage"
)

// StageInfo is how long one stage of a build took.
type StageInfo struct {
	Name StageName `json:"name"`
	// StartTime is when the stage started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// DurationMilliseconds is how long it took.
	// +optional
	DurationMilliseconds int64 `json:"durationMilliseconds,omitempty"`
}

// BuildTriggerCause records why a build was started.
type BuildTriggerCause struct {
	// Message says it in words: "Manually triggered", "Image change", ...
	Message string `json:"message"`
	// ImageDigest is the base image digest an ImageChange trigger saw.
	// +optional
	ImageDigest string `json:"imageDigest,omitempty"`
	// Commit and Ref are what a webhook reported.
	// +optional
	Commit string `json:"commit,omitempty"`
	// +optional
	Ref string `json:"ref,omitempty"`
}

// BuildSpec is one build: a copy of its BuildConfig's spec when it was started, or a spec of
// its own for a build created directly.
type BuildSpec struct {
	CommonSpec `json:",inline"`
	// TriggeredBy says why the build was started.
	// +optional
	TriggeredBy []BuildTriggerCause `json:"triggeredBy,omitempty"`
	// Cancelled asks the controller to stop the build.
	// +optional
	Cancelled bool `json:"cancelled,omitempty"`
}

// BuildOutputStatus is the image a build pushed.
type BuildOutputStatus struct {
	// Image is the reference pushed to.
	// +optional
	Image string `json:"image,omitempty"`
	// Digest is the manifest digest pushed.
	// +optional
	Digest string `json:"digest,omitempty"`
}

// BuildStatus is the observed state of a build.
type BuildStatus struct {
	// Phase is where the build is.
	// +optional
	Phase BuildPhase `json:"phase,omitempty"`
	// Reason explains a Failed, Error or Cancelled phase.
	// +optional
	Reason BuildReason `json:"reason,omitempty"`
	// Message says more, for people.
	// +optional
	Message string `json:"message,omitempty"`
	// StartTimestamp is when the build pod started running.
	// +optional
	StartTimestamp *metav1.Time `json:"startTimestamp,omitempty"`
	// CompletionTimestamp is when the build reached a final phase.
	// +optional
	CompletionTimestamp *metav1.Time `json:"completionTimestamp,omitempty"`
	// Duration is from start to completion.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
	// Stages are the build's stages with their durations.
	// +optional
	Stages []StageInfo `json:"stages,omitempty"`
	// Output is the image pushed.
	// +optional
	Output BuildOutputStatus `json:"output,omitempty"`
	// LogSnippet is the end of the log of a failed build.
	// +optional
	LogSnippet string `json:"logSnippet,omitempty"`
	// PodName is the build pod.
	// +optional
	PodName string `json:"podName,omitempty"`
	// Conditions follow the Kubernetes conventions.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Build is one run of a BuildConfig (named CONFIG-N), or a build with a spec of its own.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.output.digest`,priority=1
// +kubebuilder:printcolumn:name="Started",type=date,JSONPath=`.status.startTimestamp`
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.status.duration`
type Build struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BuildSpec   `json:"spec,omitempty"`
	Status BuildStatus `json:"status,omitempty"`
}

// BuildList is a list of Builds.
//
// +kubebuilder:object:root=true
type BuildList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Build `json:"items"`
}

// Labels and annotations the controller puts on builds and their pods.
const (
	// BuildConfigLabel names a build's BuildConfig.
	BuildConfigLabel = "kiln.dev/build-config"
	// BuildNumberAnnotation is a build's number within its BuildConfig.
	BuildNumberAnnotation = "kiln.dev/build-number"
	// BuildLabel names the build a pod runs.
	BuildLabel = "kiln.dev/build"
)
