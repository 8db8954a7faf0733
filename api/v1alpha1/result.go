package v1alpha1

// BuildResult is what a build pod's builder reports when it ends, as JSON in its termination
// message (so it stays under the kubelet's 4 KiB limit): the controller copies it into the
// Build's status. It is the contract between the builder image and the controller.
type BuildResult struct {
	// Image and Digest are what was pushed, on success.
	// +optional
	Image string `json:"image,omitempty"`
	// +optional
	Digest string `json:"digest,omitempty"`
	// Stages are the stages the builder went through, with their durations.
	// +optional
	Stages []StageInfo `json:"stages,omitempty"`
	// Reason and Message say why the build failed.
	// +optional
	Reason BuildReason `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}
