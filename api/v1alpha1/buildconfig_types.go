package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunPolicy says how the builds of one BuildConfig run together.
// +kubebuilder:validation:Enum=Serial;Parallel;SerialLatestOnly
type RunPolicy string

const (
	// RunPolicySerial runs one build at a time, in the order they were created.
	RunPolicySerial RunPolicy = "Serial"
	// RunPolicyParallel runs every build at once.
	RunPolicyParallel RunPolicy = "Parallel"
	// RunPolicySerialLatestOnly runs one build at a time and cancels the queued builds that
	// a newer one supersedes.
	RunPolicySerialLatestOnly RunPolicy = "SerialLatestOnly"
)

// TriggerType names a build trigger.
// +kubebuilder:validation:Enum=ConfigChange;ImageChange;Generic;GitHub
type TriggerType string

// The build triggers.
const (
	// TriggerConfigChange starts a build when the BuildConfig is created and when its spec
	// changes.
	TriggerConfigChange TriggerType = "ConfigChange"
	// TriggerImageChange starts a build when the digest of the base image (the final FROM,
	// or From) changes in its registry.
	TriggerImageChange TriggerType = "ImageChange"
	// TriggerGeneric starts a build on a POST to the controller's generic webhook.
	TriggerGeneric TriggerType = "Generic"
	// TriggerGitHub starts a build on a GitHub push to the source's branch, signed
	// with the trigger's secret.
	TriggerGitHub TriggerType = "GitHub"
)

// BuildTrigger is one reason to start a build.
type BuildTrigger struct {
	Type TriggerType `json:"type"`
	// ImageChange configures an ImageChange trigger.
	// +optional
	ImageChange *ImageChangeTrigger `json:"imageChange,omitempty"`
	// Generic configures a Generic webhook.
	// +optional
	Generic *WebhookTrigger `json:"generic,omitempty"`
	// GitHub configures a GitHub webhook.
	// +optional
	GitHub *WebhookTrigger `json:"github,omitempty"`
}

// ImageChangeTrigger watches an image's digest.
type ImageChangeTrigger struct {
	// From is the image to watch; the default is the final FROM of the Dockerfile.
	// +optional
	From string `json:"from,omitempty"`
	// PollIntervalSeconds is the mean interval between checks (jittered, with backoff on
	// errors); the default is 300.
	// +kubebuilder:validation:Minimum=10
	// +optional
	PollIntervalSeconds *int32 `json:"pollIntervalSeconds,omitempty"`
}

// WebhookTrigger authenticates a webhook with a shared secret.
type WebhookTrigger struct {
	// SecretName is a Secret in the BuildConfig's namespace whose key "WebHookSecretKey"
	// holds the secret: for GitHub the HMAC key of X-Hub-Signature-256, for Generic the
	// value of the "secret" query parameter.
	SecretName string `json:"secretName"`
}

// BuildConfigSpec is a template for builds, and the policy for running them.
type BuildConfigSpec struct {
	CommonSpec `json:",inline"`
	// Triggers start builds.
	// +optional
	Triggers []BuildTrigger `json:"triggers,omitempty"`
	// RunPolicy says how builds run together.
	// +kubebuilder:default=Serial
	// +optional
	RunPolicy RunPolicy `json:"runPolicy,omitempty"`
	// SuccessfulBuildsHistoryLimit is how many complete builds are kept.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=0
	// +optional
	SuccessfulBuildsHistoryLimit *int32 `json:"successfulBuildsHistoryLimit,omitempty"`
	// FailedBuildsHistoryLimit is how many failed, errored or cancelled builds are kept.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=0
	// +optional
	FailedBuildsHistoryLimit *int32 `json:"failedBuildsHistoryLimit,omitempty"`
}

// ImageChangeStatus is what an ImageChange trigger last saw.
type ImageChangeStatus struct {
	// From is the image watched.
	From string `json:"from"`
	// LastTriggeredDigest is the digest the last build was started for.
	// +optional
	LastTriggeredDigest string `json:"lastTriggeredDigest,omitempty"`
	// LastCheckTime is when the registry was last asked.
	// +optional
	LastCheckTime *metav1.Time `json:"lastCheckTime,omitempty"`
	// LastError is the last failure to ask, if the latest check failed.
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// BuildConfigStatus is the observed state of a BuildConfig.
type BuildConfigStatus struct {
	// LastVersion is the number of the newest build (app-7 is version 7).
	// +optional
	LastVersion int64 `json:"lastVersion,omitempty"`
	// ObservedGeneration is the spec generation the ConfigChange trigger last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// ImageChanges are the ImageChange triggers' observations.
	// +optional
	ImageChanges []ImageChangeStatus `json:"imageChanges,omitempty"`
}

// BuildConfig is a template for building an image, with the triggers and policy that start
// and run its builds.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=bc
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.spec.strategy.dockerStrategy.dockerfilePath`,priority=1
// +kubebuilder:printcolumn:name="Output",type=string,JSONPath=`.spec.output.to`
// +kubebuilder:printcolumn:name="Latest",type=integer,JSONPath=`.status.lastVersion`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BuildConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BuildConfigSpec   `json:"spec,omitempty"`
	Status BuildConfigStatus `json:"status,omitempty"`
}

// BuildConfigList is a list of BuildConfigs.
//
// +kubebuilder:object:root=true
type BuildConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BuildConfig `json:"items"`
}
