package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
)

// CommonSpec is what a BuildConfig and each of its Builds share: where the source comes from,
// how it is built, where the image goes, and what the build pod may use.
type CommonSpec struct {
	// Source is where the build's input comes from.
	Source BuildSource `json:"source"`
	// Strategy says how the source becomes an image.
	Strategy BuildStrategy `json:"strategy"`
	// Output is where the image is pushed, and the layer cache.
	Output BuildOutput `json:"output"`
	// CompletionDeadlineSeconds bounds a build's run from its pod's start; a build past it
	// fails with reason DeadlineExceeded.
	// +kubebuilder:validation:Minimum=1
	// +optional
	CompletionDeadlineSeconds *int64 `json:"completionDeadlineSeconds,omitempty"`
	// Resources of the build container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// NodeSelector of the build pod.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations of the build pod.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// ServiceAccountName runs the build pod; the default is the namespace's "default".
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

// BuildSource is the build's input: a git repository, an inline Dockerfile, or a binary
// upload (kiln start-build --from-dir). Git and Binary exclude each other.
type BuildSource struct {
	// Git clones a repository.
	// +optional
	Git *GitSource `json:"git,omitempty"`
	// Dockerfile is an inline Dockerfile: the whole source when there is no git or binary
	// input, else it replaces the source's Dockerfile.
	// +optional
	Dockerfile *string `json:"dockerfile,omitempty"`
	// Binary waits for the client to upload the context.
	// +optional
	Binary *BinarySource `json:"binary,omitempty"`
	// ContextDir is the build context inside the source.
	// +optional
	ContextDir string `json:"contextDir,omitempty"`
	// SourceSecret holds the git credentials: keys "username" and "password" (an HTTPS
	// token), or "ssh-privatekey" (and optionally "known_hosts").
	// +optional
	SourceSecret *corev1.LocalObjectReference `json:"sourceSecret,omitempty"`
}

// GitSource is a git repository at a ref.
type GitSource struct {
	// URI of the repository: https://, ssh:// or git@host:path.
	// +kubebuilder:validation:MinLength=1
	URI string `json:"uri"`
	// Ref is a branch, tag or commit; the default is the remote's HEAD.
	// +optional
	Ref string `json:"ref,omitempty"`
}

// BinarySource is a context the client uploads when it starts the build.
type BinarySource struct {
	// AsFile names the file the upload becomes, when the upload is one file rather than an
	// archive of a directory.
	// +optional
	AsFile string `json:"asFile,omitempty"`
}

// BuildStrategy says how the source is built. Exactly one is set.
type BuildStrategy struct {
	// Docker builds a Dockerfile.
	// +optional
	Docker *DockerStrategy `json:"dockerStrategy,omitempty"`
	// Source builds with a Source-to-Image builder image (kiln s2i build).
	// +optional
	Source *SourceStrategy `json:"sourceStrategy,omitempty"`
}

// DockerStrategy builds a Dockerfile, as kiln build does.
type DockerStrategy struct {
	// DockerfilePath is the Dockerfile inside the context; the default is Dockerfile.
	// +optional
	DockerfilePath string `json:"dockerfilePath,omitempty"`
	// BuildArgs are --build-arg values.
	// +optional
	BuildArgs []corev1.EnvVar `json:"buildArgs,omitempty"`
	// Target is the stage to build.
	// +optional
	Target string `json:"target,omitempty"`
	// NoCache runs every step.
	// +optional
	NoCache bool `json:"noCache,omitempty"`
	// PullSecret holds registry credentials for base images (a dockerconfigjson Secret).
	// +optional
	PullSecret *corev1.LocalObjectReference `json:"pullSecret,omitempty"`
	// Env is set for the builder (for example SOURCE_DATE_EPOCH); RUN steps do not see it.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
}

// SourceStrategy builds with a Source-to-Image builder image.
type SourceStrategy struct {
	// From is the builder image.
	From string `json:"from"`
	// Env reaches the assemble script and the image.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
	// Scripts is a URL of the S2I scripts, overriding the image's.
	// +optional
	Scripts string `json:"scripts,omitempty"`
	// Incremental reuses the previous image's artifacts.
	// +optional
	Incremental bool `json:"incremental,omitempty"`
	// PullSecret holds registry credentials for the builder image.
	// +optional
	PullSecret *corev1.LocalObjectReference `json:"pullSecret,omitempty"`
	// ForcePull always pulls the builder image.
	// +optional
	ForcePull bool `json:"forcePull,omitempty"`
}

// BuildOutput is where the image goes.
type BuildOutput struct {
	// To is the image reference pushed to.
	// +kubebuilder:validation:MinLength=1
	To string `json:"to"`
	// AdditionalTags are pushed too: references, or bare tags of To's repository.
	// +optional
	AdditionalTags []string `json:"additionalTags,omitempty"`
	// PushSecret holds registry credentials for pushing (a dockerconfigjson Secret).
	// +optional
	PushSecret *corev1.LocalObjectReference `json:"pushSecret,omitempty"`
	// ImageLabels are added to the image.
	// +optional
	ImageLabels []ImageLabel `json:"imageLabels,omitempty"`
	// Cache is the layer cache shared by the builds; the default is the registry repository
	// <To's repository>/cache.
	// +optional
	Cache *BuildCache `json:"cache,omitempty"`
}

// ImageLabel is a label added to the built image.
type ImageLabel struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// BuildCache is where builds keep their layer cache. At most one of Registry and
// PersistentVolumeClaim is set.
type BuildCache struct {
	// Registry is a repository for the cache (kiln build --cache-to type=registry).
	// +optional
	Registry string `json:"registry,omitempty"`
	// PersistentVolumeClaim names a claim mounted into the build pod for the cache (an OCI
	// layout directory).
	// +optional
	PersistentVolumeClaim string `json:"persistentVolumeClaim,omitempty"`
	// Disabled turns the cache off.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}
