package controller

import (
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// PodOptions are the cluster-wide choices for build pods, set on the controller's command line.
type PodOptions struct {
	// BuilderImage is the kiln image the pod runs.
	BuilderImage string
	// SeccompProfile is a Localhost profile path relative to the kubelet's seccomp directory
	// (kiln ships kiln-seccomp.json: containerd's default plus exactly the calls kiln needs);
	// "" uses RuntimeDefault, which works where the runtime's default allows nested user
	// namespaces.
	SeccompProfile string
	// StoreSizeLimit bounds the emptyDir that holds kiln's store.
	StoreSizeLimit resource.Quantity
	// UnmaskedProc asks for procMount: Unmasked, so RUN steps get a fresh /proc (needs the
	// ProcMountType feature and hostUsers: false).
	UnmaskedProc bool
	// InsecureRegistries are registries build pods may reach over plain HTTP or with
	// unverified TLS (kiln build --insecure-registry): the controller's own list, so that one
	// setting covers its base-image checks and the builds.
	InsecureRegistries []string
}

// Paths inside the build pod.
const (
	workspaceDir = "/workspace"
	sourceDir    = workspaceDir + "/source"
	storeDir     = "/var/lib/kiln"
	cacheDir     = "/var/lib/kiln-cache"
	pushAuthDir  = "/var/run/kiln/push"
	pullAuthDir  = "/var/run/kiln/pull"
	gitAuthDir   = "/var/run/kiln/source"
	resultPath   = "/dev/termination-log"
	dockerConfig = ".dockerconfigjson"
)

// Container names in the build pod.
const (
	fetchContainer = "fetch-source"
	buildContainer = "build"
)

// PodName is the name of the pod that runs build b.
func PodName(b *kilnv1.Build) string { return b.Name + "-build" }

// BuildPod renders the pod that runs b: an init container that fetches the source (a git
// clone, the client's upload on stdin, or an inline Dockerfile), and the builder, which runs
// kiln build as uid 0 of the pod's own user namespace (hostUsers: false), so that it can map
// the 65536 ids the pod owns into its RUN steps.
//
// Security, by default: no privilege, no escalation, every capability dropped but SETUID,
// SETGID and SETFCAP (to write the id maps of kiln's nested user namespaces: since Linux 5.12
// mapping the namespace's root onto the pod's root needs SETFCAP), no host path or socket, no
// service account token, the store in a size-limited emptyDir, registry credentials mounted
// read-only where RUN steps cannot see them (RUN sees only the image's rootfs), and a seccomp
// profile (Localhost, or RuntimeDefault where nested user namespaces are allowed).
func BuildPod(b *kilnv1.Build, o PodOptions) (*corev1.Pod, error) {
	docker, s2iStrategy := b.Spec.Strategy.Docker, b.Spec.Strategy.Source
	switch {
	case docker == nil && s2iStrategy == nil:
		return nil, fmt.Errorf("the build has no strategy: give dockerStrategy or sourceStrategy")
	case docker != nil && s2iStrategy != nil:
		return nil, fmt.Errorf("dockerStrategy and sourceStrategy exclude each other")
	case s2iStrategy != nil && s2iStrategy.From == "":
		return nil, fmt.Errorf("sourceStrategy.from (the builder image) is empty")
	}
	src := b.Spec.Source
	if src.Git != nil && src.Binary != nil {
		return nil, fmt.Errorf("source.git and source.binary exclude each other")
	}
	if src.Git == nil && src.Binary == nil && (src.Dockerfile == nil || s2iStrategy != nil) {
		return nil, fmt.Errorf("the build has no source: give git, binary or dockerfile")
	}
	if b.Spec.Output.To == "" {
		return nil, fmt.Errorf("output.to is empty")
	}
	if o.BuilderImage == "" {
		return nil, fmt.Errorf("no builder image configured")
	}
	storeLimit := o.StoreSizeLimit
	if storeLimit.IsZero() {
		storeLimit = resource.MustParse("20Gi")
	}

	volumes := []corev1.Volume{
		{Name: "workspace", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "store", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &storeLimit}}},
	}
	workspace := corev1.VolumeMount{Name: "workspace", MountPath: workspaceDir}
	fetch := corev1.Container{
		Name:            fetchContainer,
		Image:           o.BuilderImage,
		Args:            []string{"source", "--dest", sourceDir},
		VolumeMounts:    []corev1.VolumeMount{workspace},
		SecurityContext: containerSecurity(),
	}
	switch {
	case src.Git != nil:
		fetch.Args = append(fetch.Args, "--git", src.Git.URI)
		if src.Git.Ref != "" {
			fetch.Args = append(fetch.Args, "--ref", src.Git.Ref)
		}
		if src.SourceSecret != nil {
			volumes = append(volumes, secretVolume("source-secret", src.SourceSecret.Name))
			fetch.VolumeMounts = append(fetch.VolumeMounts, corev1.VolumeMount{Name: "source-secret", MountPath: gitAuthDir, ReadOnly: true})
			fetch.Args = append(fetch.Args, "--auth-dir", gitAuthDir)
		}
	case src.Binary != nil:
		fetch.Args = append(fetch.Args, "--stdin")
		if src.Binary.AsFile != "" {
			fetch.Args = append(fetch.Args, "--as-file", src.Binary.AsFile)
		}
		fetch.Stdin, fetch.StdinOnce = true, true
	}
	if src.Dockerfile != nil && docker != nil {
		// The kubelet expands $(NAME) and $$ in env values: doubling every $ keeps the
		// Dockerfile as written ("$$" in a RUN stays "$$").
		fetch.Env = append(fetch.Env, corev1.EnvVar{Name: "KILN_DOCKERFILE", Value: strings.ReplaceAll(*src.Dockerfile, "$", "$$")})
		fetch.Args = append(fetch.Args, "--dockerfile-from-env", "KILN_DOCKERFILE",
			"--dockerfile-path", path.Join(src.ContextDir, dockerfilePath(b)))
	}

	var args []string
	var env []corev1.EnvVar
	var pullSecret *corev1.LocalObjectReference
	var err error
	if docker != nil {
		args, err = buildArgs(b)
		env, pullSecret = docker.Env, docker.PullSecret
	} else {
		args, err = s2iArgs(b)
		pullSecret = s2iStrategy.PullSecret
	}
	if err != nil {
		return nil, err
	}
	for _, r := range o.InsecureRegistries {
		args = append(args, "--insecure-registry", r)
	}
	build := corev1.Container{
		Name:  buildContainer,
		Image: o.BuilderImage,
		Args:  args,
		Env: append([]corev1.EnvVar{
			{Name: "HOME", Value: storeDir + "/home"},
			{Name: "TMPDIR", Value: storeDir + "/tmp"},
		}, env...),
		VolumeMounts: []corev1.VolumeMount{
			workspace,
			{Name: "store", MountPath: storeDir},
		},
		Resources:                b.Spec.Resources,
		SecurityContext:          containerSecurity(),
		TerminationMessagePath:   resultPath,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
	if o.UnmaskedProc {
		build.SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount)
	}
	if s := b.Spec.Output.PushSecret; s != nil {
		volumes = append(volumes, secretVolume("push-secret", s.Name))
		build.VolumeMounts = append(build.VolumeMounts, corev1.VolumeMount{Name: "push-secret", MountPath: pushAuthDir, ReadOnly: true})
		build.Args = append(build.Args, "--authfile", pushAuthDir+"/"+dockerConfig)
	}
	if s := pullSecret; s != nil {
		volumes = append(volumes, secretVolume("pull-secret", s.Name))
		build.VolumeMounts = append(build.VolumeMounts, corev1.VolumeMount{Name: "pull-secret", MountPath: pullAuthDir, ReadOnly: true})
		build.Env = append(build.Env, corev1.EnvVar{Name: "REGISTRY_AUTH_FILE", Value: pullAuthDir + "/" + dockerConfig})
	}
	if c := b.Spec.Output.Cache; c != nil && c.PersistentVolumeClaim != "" && !c.Disabled {
		volumes = append(volumes, corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.PersistentVolumeClaim}}})
		build.VolumeMounts = append(build.VolumeMounts, corev1.VolumeMount{Name: "cache", MountPath: cacheDir})
	}
	// The context directory goes last, as kiln build wants it; s2i takes SOURCE BUILDER TAG.
	if docker != nil {
		build.Args = append(build.Args, path.Join(sourceDir, src.ContextDir))
	} else {
		build.Args = append(build.Args, sourceDir, s2iStrategy.From, b.Spec.Output.To)
	}

	seccomp := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	if o.SeccompProfile != "" {
		seccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: ptr.To(o.SeccompProfile)}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      PodName(b),
			Namespace: b.Namespace,
			Labels:    map[string]string{kilnv1.BuildLabel: b.Name},
		},
		Spec: corev1.PodSpec{
			HostUsers:                    ptr.To(false),
			RestartPolicy:                corev1.RestartPolicyNever,
			ServiceAccountName:           b.Spec.ServiceAccountName,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			NodeSelector:                 b.Spec.NodeSelector,
			Tolerations:                  b.Spec.Tolerations,
			ActiveDeadlineSeconds:        b.Spec.CompletionDeadlineSeconds,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser:      ptr.To[int64](0),
				RunAsGroup:     ptr.To[int64](0),
				SeccompProfile: seccomp,
			},
			InitContainers: []corev1.Container{fetch},
			Containers:     []corev1.Container{build},
			Volumes:        volumes,
		},
	}
	if bc := b.Labels[kilnv1.BuildConfigLabel]; bc != "" {
		pod.Labels[kilnv1.BuildConfigLabel] = bc
	}
	return pod, nil
}

// containerSecurity is the security context of both containers: no privilege, no escalation,
// capabilities dropped but those that write id maps (found by running the rendered pod in a
// pod-like container: without SETFCAP the kernel refuses the map).
func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		Privileged:               ptr.To(false),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"SETUID", "SETGID", "SETFCAP"},
		},
	}
}

// secretVolume mounts a Secret read-only by its owner only.
func secretVolume(name, secret string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: secret, DefaultMode: ptr.To[int32](0o400)}}}
}

// dockerfilePath is the Dockerfile's path inside the context.
func dockerfilePath(b *kilnv1.Build) string {
	if p := b.Spec.Strategy.Docker.DockerfilePath; p != "" {
		return p
	}
	return "Dockerfile"
}

// buildArgs are the arguments of kiln build for b, but its context directory.
func buildArgs(b *kilnv1.Build) ([]string, error) {
	d := b.Spec.Strategy.Docker
	out := b.Spec.Output
	args := []string{"build", "--root", storeDir + "/store", "--result-file", resultPath,
		"-f", path.Join(sourceDir, b.Spec.Source.ContextDir, dockerfilePath(b)),
		"--destination", out.To}
	dests, err := additionalDestinations(out)
	if err != nil {
		return nil, err
	}
	args = append(args, dests...)
	buildArgs, err := keyValueArgs("--build-arg", "buildArgs", d.BuildArgs)
	if err != nil {
		return nil, err
	}
	args = append(args, buildArgs...)
	if d.Target != "" {
		args = append(args, "--target", d.Target)
	}
	if d.NoCache {
		args = append(args, "--no-cache")
	}
	for _, l := range out.ImageLabels {
		args = append(args, "--label", l.Name+"="+l.Value)
	}
	args = append(args, cacheArgs(out)...)
	return args, nil
}

// additionalDestinations are --destination flags for out's additional tags.
func additionalDestinations(out kilnv1.BuildOutput) ([]string, error) {
	var args []string
	for _, t := range out.AdditionalTags {
		ref, err := tagRef(out.To, t)
		if err != nil {
			return nil, err
		}
		args = append(args, "--destination", ref)
	}
	return args, nil
}

// keyValueArgs turns variables into flag NAME=VALUE pairs; field names them in errors.
func keyValueArgs(flag, field string, vars []corev1.EnvVar) ([]string, error) {
	var args []string
	for _, v := range vars {
		if v.ValueFrom != nil {
			return nil, fmt.Errorf("%s %s: valueFrom is not supported; give a value", field, v.Name)
		}
		args = append(args, flag, v.Name+"="+v.Value)
	}
	return args, nil
}

// s2iArgs are the arguments of kiln s2i build for b, but SOURCE BUILDER TAG.
func s2iArgs(b *kilnv1.Build) ([]string, error) {
	st := b.Spec.Strategy.Source
	out := b.Spec.Output
	args := []string{"s2i", "build", "--root", storeDir + "/store", "--result-file", resultPath, "--push"}
	if dir := b.Spec.Source.ContextDir; dir != "" {
		args = append(args, "--context-dir", dir)
	}
	dests, err := additionalDestinations(out)
	if err != nil {
		return nil, err
	}
	args = append(args, dests...)
	env, err := keyValueArgs("-e", "sourceStrategy.env", st.Env)
	if err != nil {
		return nil, err
	}
	args = append(args, env...)
	if st.Scripts != "" {
		args = append(args, "--scripts-url", st.Scripts)
	}
	if st.Incremental {
		args = append(args, "--incremental")
	}
	if st.ForcePull {
		args = append(args, "--pull")
	}
	return append(args, cacheArgs(out)...), nil
}

// cacheArgs are the --cache-from and --cache-to flags for out: a PVC directory, a registry
// repository, or <output repository>/cache by default.
func cacheArgs(out kilnv1.BuildOutput) []string {
	c := out.Cache
	switch {
	case c != nil && c.Disabled:
		return nil
	case c != nil && c.PersistentVolumeClaim != "":
		dir := cacheDir + "/layout"
		return []string{"--cache-from", "type=local,src=" + dir, "--cache-to", "type=local,dest=" + dir + ",mode=max"}
	}
	ref := repository(out.To) + "/cache"
	if c != nil && c.Registry != "" {
		ref = c.Registry
	}
	return []string{"--cache-from", "type=registry,ref=" + ref, "--cache-to", "type=registry,ref=" + ref + ",mode=max"}
}

// repository is a reference without its tag or digest.
func repository(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// tagRef turns an additional tag into a reference: a bare tag names a tag of to's repository.
func tagRef(to, tag string) (string, error) {
	if tag == "" {
		return "", fmt.Errorf("output.additionalTags has an empty tag")
	}
	if strings.ContainsAny(tag, "/@") {
		return tag, nil
	}
	return repository(to) + ":" + tag, nil
}
