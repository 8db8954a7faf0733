package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

func sampleBuild() *kilnv1.Build {
	return &kilnv1.Build{
		ObjectMeta: metav1.ObjectMeta{Name: "app-3", Namespace: "ci", Labels: map[string]string{kilnv1.BuildConfigLabel: "app"}},
		Spec: kilnv1.BuildSpec{CommonSpec: kilnv1.CommonSpec{
			Source: kilnv1.BuildSource{Git: &kilnv1.GitSource{URI: "https://git.example/app.git", Ref: "main"},
				ContextDir: "svc", SourceSecret: &corev1.LocalObjectReference{Name: "git-token"}},
			Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{
				BuildArgs:  []corev1.EnvVar{{Name: "V", Value: "1"}},
				PullSecret: &corev1.LocalObjectReference{Name: "pull"},
			}},
			Output: kilnv1.BuildOutput{To: "registry.example:5000/team/app:v1", AdditionalTags: []string{"latest", "other.example/app:x"},
				PushSecret: &corev1.LocalObjectReference{Name: "push"}},
			CompletionDeadlineSeconds: ptr.To[int64](600),
		}},
	}
}

func TestBuildPodIsHardened(t *testing.T) {
	pod, err := BuildPod(sampleBuild(), PodOptions{BuilderImage: "registry.example/kiln:1", SeccompProfile: "kiln/kiln-seccomp.json"})
	if err != nil {
		t.Fatal(err)
	}
	s := pod.Spec
	if s.HostUsers == nil || *s.HostUsers || s.RestartPolicy != corev1.RestartPolicyNever || *s.AutomountServiceAccountToken {
		t.Errorf("hostUsers %v, restartPolicy %s, token %v", s.HostUsers, s.RestartPolicy, *s.AutomountServiceAccountToken)
	}
	if p := s.SecurityContext.SeccompProfile; p.Type != corev1.SeccompProfileTypeLocalhost || *p.LocalhostProfile != "kiln/kiln-seccomp.json" {
		t.Errorf("seccomp %+v", p)
	}
	for _, c := range append(slices.Clone(s.InitContainers), s.Containers...) {
		sc := c.SecurityContext
		if sc == nil || *sc.Privileged || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: security context %+v", c.Name, sc)
		}
		if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"SETUID", "SETGID", "SETFCAP"}) {
			t.Errorf("%s: adds capabilities %v", c.Name, sc.Capabilities.Add)
		}
	}
	for _, v := range s.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
		if v.Name == "store" && (v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil) {
			t.Errorf("the store is not a size-limited emptyDir: %+v", v)
		}
		if v.Secret != nil && *v.Secret.DefaultMode != 0o400 {
			t.Errorf("secret %s mode %o", v.Name, *v.Secret.DefaultMode)
		}
	}
	// The git secret reaches only the fetch container, registry secrets only the builder.
	mounts := func(c corev1.Container) string { return fmt.Sprint(c.VolumeMounts) }
	if f, b := mounts(s.InitContainers[0]), mounts(s.Containers[0]); !strings.Contains(f, "source-secret") ||
		strings.Contains(f, "push-secret") || strings.Contains(b, "source-secret") || !strings.Contains(b, "push-secret") {
		t.Errorf("secrets mounted where they should not be:\nfetch %s\nbuild %s", f, b)
	}
	args := strings.Join(s.Containers[0].Args, " ")
	for _, want := range []string{
		"--destination registry.example:5000/team/app:v1", "--destination registry.example:5000/team/app:latest",
		"--destination other.example/app:x", "--build-arg V=1", "-f /workspace/source/svc/Dockerfile",
		"--cache-from type=registry,ref=registry.example:5000/team/app/cache", "--authfile /var/run/kiln/push/.dockerconfigjson",
		"--result-file /dev/termination-log",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("builder args lack %q: %s", want, args)
		}
	}
	if last := s.Containers[0].Args[len(s.Containers[0].Args)-1]; last != "/workspace/source/svc" {
		t.Errorf("context %q", last)
	}
	if *s.ActiveDeadlineSeconds != 600 {
		t.Errorf("activeDeadlineSeconds %d", *s.ActiveDeadlineSeconds)
	}
}

func TestBuildPodRefusesBadSpecs(t *testing.T) {
	for name, mutate := range map[string]func(*kilnv1.Build){
		"no strategy":  func(b *kilnv1.Build) { b.Spec.Strategy.Docker = nil },
		"git + binary": func(b *kilnv1.Build) { b.Spec.Source.Binary = &kilnv1.BinarySource{} },
		"no source":    func(b *kilnv1.Build) { b.Spec.Source = kilnv1.BuildSource{} },
		"no output":    func(b *kilnv1.Build) { b.Spec.Output.To = "" },
		"valueFrom": func(b *kilnv1.Build) {
			b.Spec.Strategy.Docker.BuildArgs = []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{}}}
		},
	} {
		b := sampleBuild()
		mutate(b)
		if _, err := BuildPod(b, PodOptions{BuilderImage: "kiln"}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func named(phases ...kilnv1.BuildPhase) []kilnv1.Build {
	var out []kilnv1.Build
	for i, p := range phases {
		out = append(out, kilnv1.Build{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b-%d", i+1), Annotations: map[string]string{kilnv1.BuildNumberAnnotation: fmt.Sprint(i + 1)}},
			Status:     kilnv1.BuildStatus{Phase: p},
		})
	}
	// Admission must not depend on the order the API lists them in.
	slices.Reverse(out)
	return out
}

func TestAdmit(t *testing.T) {
	const (
		n = kilnv1.BuildPhaseNew
		r = kilnv1.BuildPhaseRunning
		c = kilnv1.BuildPhaseComplete
	)
	for _, tt := range []struct {
		policy           kilnv1.RunPolicy
		builds           []kilnv1.Build
		start, supersede string
	}{
		{kilnv1.RunPolicySerial, named(c, n, n), "[b-2]", "[]"},
		{kilnv1.RunPolicySerial, named(r, n, n), "[]", "[]"},
		{kilnv1.RunPolicyParallel, named(r, n, n), "[b-2 b-3]", "[]"},
		{kilnv1.RunPolicySerialLatestOnly, named(r, n, n, n), "[]", "[b-2 b-3]"},
		{kilnv1.RunPolicySerialLatestOnly, named(c, n, n), "[b-3]", "[b-2]"},
		{kilnv1.RunPolicySerialLatestOnly, named(c, c), "[]", "[]"},
	} {
		start, supersede := admit(tt.policy, tt.builds)
		if fmt.Sprint(start) != tt.start || fmt.Sprint(supersede) != tt.supersede && !(len(supersede) == 0 && tt.supersede == "[]") {
			t.Errorf("%s: start %v supersede %v, want %s %s", tt.policy, start, supersede, tt.start, tt.supersede)
		}
	}
}

func TestPrune(t *testing.T) {
	builds := named(kilnv1.BuildPhaseComplete, kilnv1.BuildPhaseFailed, kilnv1.BuildPhaseComplete, kilnv1.BuildPhaseCancelled,
		kilnv1.BuildPhaseComplete, kilnv1.BuildPhaseRunning, kilnv1.BuildPhaseError)
	if got := fmt.Sprint(prune(builds, 2, 1)); got != "[b-1 b-2 b-4]" {
		t.Errorf("prune = %s", got)
	}
	if got := prune(builds, 5, 5); len(got) != 0 {
		t.Errorf("prune under the limits = %v", got)
	}
}

func terminated(code int32, reason, msg string) corev1.ContainerState {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg, StartedAt: now, FinishedAt: metav1.NewTime(now.Add(3 * time.Second))}}
}

func TestPodOutcome(t *testing.T) {
	fetched := corev1.ContainerStatus{Name: fetchContainer, State: terminated(0, "Completed", "")}
	for _, tt := range []struct {
		name   string
		status corev1.PodStatus
		phase  kilnv1.BuildPhase
		reason kilnv1.BuildReason
	}{
		{"scheduled", corev1.PodStatus{Phase: corev1.PodPending}, kilnv1.BuildPhasePending, ""},
		{"evicted", corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}, kilnv1.BuildPhaseError, kilnv1.ReasonPodEvicted},
		{"deadline", corev1.PodStatus{Phase: corev1.PodFailed, Reason: "DeadlineExceeded"}, kilnv1.BuildPhaseFailed, kilnv1.ReasonDeadlineExceeded},
		{"bad image", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: fetchContainer,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}},
			kilnv1.BuildPhaseFailed, kilnv1.ReasonPullBuilderImageFailed},
		{"fetch failed", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: fetchContainer, State: terminated(1, "Error", "git: no such ref")}}},
			kilnv1.BuildPhaseFailed, kilnv1.ReasonFetchSourceFailed},
		{"running", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{fetched}, ContainerStatuses: []corev1.ContainerStatus{{Name: buildContainer,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}, kilnv1.BuildPhaseRunning, ""},
		{"oom", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: buildContainer, State: terminated(137, "OOMKilled", "")}}},
			kilnv1.BuildPhaseFailed, kilnv1.ReasonOutOfMemoryKilled},
		{"push failed", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: buildContainer,
			State: terminated(1, "Error", `{"reason":"PushFailed","message":"401"}`)}}}, kilnv1.BuildPhaseFailed, kilnv1.ReasonPushFailed},
		{"complete", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{fetched}, ContainerStatuses: []corev1.ContainerStatus{{Name: buildContainer,
			State: terminated(0, "Completed", `{"image":"r/app:v1","digest":"sha256:ab","stages":[{"name":"Build","durationMilliseconds":5}]}`)}}},
			kilnv1.BuildPhaseComplete, ""},
	} {
		o := podOutcome(&corev1.Pod{Status: tt.status})
		if o.phase != tt.phase || o.reason != tt.reason {
			t.Errorf("%s: %s/%s, want %s/%s", tt.name, o.phase, o.reason, tt.phase, tt.reason)
		}
		if tt.name == "complete" {
			if o.result == nil || o.result.Digest != "sha256:ab" || len(stagesOf(o)) != 2 || stagesOf(o)[0].DurationMilliseconds != 3000 {
				t.Errorf("complete: result %+v, stages %+v", o.result, stagesOf(o))
			}
		}
	}
}

func TestBuildPodSourceStrategy(t *testing.T) {
	b := sampleBuild()
	b.Spec.Strategy = kilnv1.BuildStrategy{Source: &kilnv1.SourceStrategy{From: "registry.example/s2i/python:3", Incremental: true,
		Env: []corev1.EnvVar{{Name: "APP_MODE", Value: "prod"}}, PullSecret: &corev1.LocalObjectReference{Name: "pull"}}}
	pod, err := BuildPod(b, PodOptions{BuilderImage: "kiln"})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	for _, want := range []string{"s2i build", "--incremental", "-e APP_MODE=prod", "--context-dir svc", "--push",
		"--destination registry.example:5000/team/app:latest", "--result-file /dev/termination-log",
		"/workspace/source registry.example/s2i/python:3 registry.example:5000/team/app:v1"} {
		if !strings.Contains(args, want) {
			t.Errorf("s2i args lack %q: %s", want, args)
		}
	}
	if !strings.Contains(fmt.Sprint(pod.Spec.Containers[0].Env), "REGISTRY_AUTH_FILE") {
		t.Error("the pull secret does not reach the builder")
	}
	b.Spec.Strategy.Docker = &kilnv1.DockerStrategy{}
	if _, err := BuildPod(b, PodOptions{BuilderImage: "kiln"}); err == nil {
		t.Error("both strategies accepted")
	}
}

// The controller's --insecure-registry list reaches both kinds of build, before their
// positional arguments.
func TestBuildPodInsecureRegistries(t *testing.T) {
	for _, strategy := range []kilnv1.BuildStrategy{
		{Docker: &kilnv1.DockerStrategy{}},
		{Source: &kilnv1.SourceStrategy{From: "registry.example/s2i/python:3"}},
	} {
		b := sampleBuild()
		b.Spec.Strategy = strategy
		pod, err := BuildPod(b, PodOptions{BuilderImage: "kiln", InsecureRegistries: []string{"10.0.0.1:5000", "reg.local"}})
		if err != nil {
			t.Fatal(err)
		}
		args := strings.Join(pod.Spec.Containers[0].Args, " ")
		i := strings.Index(args, "--insecure-registry 10.0.0.1:5000 --insecure-registry reg.local ")
		if i < 0 || i > strings.LastIndex(args, " /workspace/source") {
			t.Errorf("args %q: want both --insecure-registry flags before the positional arguments", args)
		}
	}
}

// An inline Dockerfile travels in an env value, which the kubelet expands: every $ is doubled
// so that the fetch container gets it as written.
func TestBuildPodInlineDockerfileKeepsDollars(t *testing.T) {
	b := sampleBuild()
	df := "FROM busybox\nRUN echo $$ $(HOME) ${X}\n"
	b.Spec.Source = kilnv1.BuildSource{Dockerfile: &df}
	b.Spec.Strategy = kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}}
	pod, err := BuildPod(b, PodOptions{BuilderImage: "kiln"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range pod.Spec.InitContainers[0].Env {
		if e.Name == "KILN_DOCKERFILE" {
			if want := "FROM busybox\nRUN echo $$$$ $$(HOME) $${X}\n"; e.Value != want {
				t.Errorf("KILN_DOCKERFILE = %q, want %q (what the kubelet turns back into the Dockerfile)", e.Value, want)
			}
			return
		}
	}
	t.Error("no KILN_DOCKERFILE in the fetch container")
}
