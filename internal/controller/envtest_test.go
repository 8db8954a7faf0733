package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// The controller suite runs against a real kube-apiserver and etcd (envtest), built from Go
// modules by hack/kube/build.sh; there is no kubelet, so the tests play its part by writing
// pod statuses.

// cluster is a running envtest API server with kiln's CRDs.
type cluster struct {
	cfg    *rest.Config
	client client.Client
	scheme *runtime.Scheme
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; remedy: export KUBEBUILDER_ASSETS=$(hack/kube/build.sh) (make test does this)")
	}
	ctrl.SetLogger(logr.Discard())
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	kilnv1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{cfg: cfg, client: c, scheme: scheme}
}

// newManager makes a controller manager on the test's API server. A restarted controller
// registers the same controller names again in this process, hence SkipNameValidation.
func (c *cluster) newManager(t *testing.T) ctrl.Manager {
	t.Helper()
	mgr, err := ctrl.NewManager(c.cfg, ctrl.Options{Scheme: c.scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

// run starts mgr until the returned function is called (or the test ends).
func run(t *testing.T, mgr ctrl.Manager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// startController runs the whole controller until the returned function is called.
func (c *cluster) startController(t *testing.T) (stop func()) {
	t.Helper()
	mgr := c.newManager(t)
	if err := Setup(mgr, PodOptions{BuilderImage: "registry.test/kiln:dev", SeccompProfile: "kiln/kiln-seccomp.json"}, fakeLogs{}, TriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	return run(t, mgr)
}

// namespace makes a fresh namespace for one test.
func (c *cluster) namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kiln-"}}
	if err := c.client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// eventually polls check until it returns nil or 30 s pass.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func buildConfig(ns, name string, policy kilnv1.RunPolicy, triggers ...kilnv1.TriggerType) *kilnv1.BuildConfig {
	bc := &kilnv1.BuildConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kilnv1.BuildConfigSpec{
			CommonSpec: kilnv1.CommonSpec{
				Source:   kilnv1.BuildSource{Dockerfile: ptr.To("FROM scratch\n")},
				Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}},
				Output:   kilnv1.BuildOutput{To: "registry.test/app:latest"},
			},
			RunPolicy: policy,
		},
	}
	for _, tr := range triggers {
		bc.Spec.Triggers = append(bc.Spec.Triggers, kilnv1.BuildTrigger{Type: tr})
	}
	return bc
}

// phase waits for build name to reach phase and returns it.
func (c *cluster) phase(t *testing.T, ns, name string, phase kilnv1.BuildPhase) *kilnv1.Build {
	t.Helper()
	var b kilnv1.Build
	eventually(t, fmt.Sprintf("build %s to be %s", name, phase), func() error {
		if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &b); err != nil {
			return err
		}
		if b.Status.Phase != phase {
			return fmt.Errorf("phase %q (%s: %s)", b.Status.Phase, b.Status.Reason, b.Status.Message)
		}
		return nil
	})
	return &b
}

// setPod plays the kubelet: it gives the build's pod a status.
func (c *cluster) setPod(t *testing.T, ns, build string, status corev1.PodStatus) {
	t.Helper()
	eventually(t, "updating the pod of "+build, func() error {
		var pod corev1.Pod
		if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: build + "-build"}, &pod); err != nil {
			return err
		}
		pod.Status = status
		return c.client.Status().Update(context.Background(), &pod)
	})
}

func runningStatus() corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: fetchContainer, State: terminated(0, "Completed", "")}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: buildContainer,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}}
}

func endedStatus(code int32, reason, msg string) corev1.PodStatus {
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	return corev1.PodStatus{Phase: phase,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: fetchContainer, State: terminated(0, "Completed", "")}},
		ContainerStatuses:     []corev1.ContainerStatus{{Name: buildContainer, State: terminated(code, reason, msg)}}}
}

func TestController(t *testing.T) {
	c := startCluster(t)
	stop := c.startController(t)
	ctx := context.Background()

	t.Run("phases to Complete", func(t *testing.T) {
		ns := c.namespace(t)
		if err := c.client.Create(ctx, buildConfig(ns, "app", kilnv1.RunPolicySerial, kilnv1.TriggerConfigChange)); err != nil {
			t.Fatal(err)
		}
		b := c.phase(t, ns, "app-1", kilnv1.BuildPhasePending)
		if b.Spec.TriggeredBy[0].Message != "Build configuration created" || b.Status.PodName != "app-1-build" {
			t.Errorf("build %+v", b.Spec.TriggeredBy)
		}
		var pod corev1.Pod
		if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app-1-build"}, &pod); err != nil {
			t.Fatal(err)
		}
		if *pod.Spec.HostUsers || pod.OwnerReferences[0].Name != "app-1" || pod.Spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost {
			t.Errorf("pod: hostUsers %v, owner %v, seccomp %+v", *pod.Spec.HostUsers, pod.OwnerReferences, pod.Spec.SecurityContext.SeccompProfile)
		}
		c.setPod(t, ns, "app-1", runningStatus())
		c.phase(t, ns, "app-1", kilnv1.BuildPhaseRunning)
		c.setPod(t, ns, "app-1", endedStatus(0, "Completed",
			`{"image":"registry.test/app:latest","digest":"sha256:1234","stages":[{"name":"Build","durationMilliseconds":42}]}`))
		b = c.phase(t, ns, "app-1", kilnv1.BuildPhaseComplete)
		if b.Status.Output.Digest != "sha256:1234" || len(b.Status.Stages) != 2 || b.Status.CompletionTimestamp == nil || b.Status.Duration == nil {
			t.Errorf("status %+v", b.Status)
		}
		// The metrics endpoint counts it (phases are read from the manager's cache, which may
		// lag the API for a moment).
		eventually(t, "the metrics to count the build", func() error {
			families, err := crmetrics.Registry.Gather()
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, f := range families {
				for _, m := range f.GetMetric() {
					if f.GetName() == "kiln_build_duration_seconds" && m.GetHistogram().GetSampleCount() > 0 {
						seen["duration"] = true
					}
					for _, l := range m.GetLabel() {
						if f.GetName() == "kiln_builds" && l.GetValue() == "Complete" && m.GetGauge().GetValue() >= 1 {
							seen["phase"] = true
						}
					}
				}
			}
			if !seen["duration"] || !seen["phase"] {
				return fmt.Errorf("metrics seen: %v", seen)
			}
			return nil
		})
		// A spec change starts build 2.
		var bc kilnv1.BuildConfig
		eventually(t, "changing the spec", func() error {
			if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, &bc); err != nil {
				return err
			}
			bc.Spec.Strategy.Docker.Target = "final"
			return c.client.Update(ctx, &bc)
		})
		b = c.phase(t, ns, "app-2", kilnv1.BuildPhasePending)
		if b.Spec.Strategy.Docker.Target != "final" || b.Spec.TriggeredBy[0].Message != "Build configuration change" {
			t.Errorf("build 2 spec %+v", b.Spec)
		}
	})

	t.Run("failure reasons", func(t *testing.T) {
		ns := c.namespace(t)
		if err := c.client.Create(ctx, buildConfig(ns, "app", kilnv1.RunPolicyParallel)); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name   string
			act    func(build string)
			phase  kilnv1.BuildPhase
			reason kilnv1.BuildReason
		}{
			{"push failed", func(b string) { c.setPod(t, ns, b, endedStatus(1, "Error", `{"reason":"PushFailed","message":"401"}`)) },
				kilnv1.BuildPhaseFailed, kilnv1.ReasonPushFailed},
			{"oom", func(b string) { c.setPod(t, ns, b, endedStatus(137, "OOMKilled", "")) }, kilnv1.BuildPhaseFailed, kilnv1.ReasonOutOfMemoryKilled},
			{"evicted", func(b string) {
				c.setPod(t, ns, b, corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "the node was low on memory"})
			}, kilnv1.BuildPhaseError, kilnv1.ReasonPodEvicted},
			{"pod deleted", func(b string) {
				c.setPod(t, ns, b, runningStatus())
				c.phase(t, ns, b, kilnv1.BuildPhaseRunning)
				if err := c.client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: b + "-build"}}); err != nil {
					t.Fatal(err)
				}
			}, kilnv1.BuildPhaseError, kilnv1.ReasonPodDeleted},
			{"cancelled", func(b string) {
				eventually(t, "cancelling", func() error {
					var build kilnv1.Build
					if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: b}, &build); err != nil {
						return err
					}
					build.Spec.Cancelled = true
					return c.client.Update(ctx, &build)
				})
			}, kilnv1.BuildPhaseCancelled, kilnv1.ReasonCancelled},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				b, err := Instantiate(ctx, c.client, client.ObjectKey{Namespace: ns, Name: "app"}, kilnv1.BuildTriggerCause{Message: tc.name}, false)
				if err != nil {
					t.Fatal(err)
				}
				c.phase(t, ns, b.Name, kilnv1.BuildPhasePending)
				tc.act(b.Name)
				got := c.phase(t, ns, b.Name, tc.phase)
				if got.Status.Reason != tc.reason {
					t.Errorf("reason %s (%s), want %s", got.Status.Reason, got.Status.Message, tc.reason)
				}
				if tc.phase == kilnv1.BuildPhaseCancelled {
					eventually(t, "the pod to go", func() error {
						err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: b.Name + "-build"}, &corev1.Pod{})
						if apierrors.IsNotFound(err) {
							return nil
						}
						return fmt.Errorf("pod still there (%v)", err)
					})
				}
			})
		}
	})

	t.Run("deadline", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicySerial)
		bc.Spec.CompletionDeadlineSeconds = ptr.To[int64](2)
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		b, err := Instantiate(ctx, c.client, client.ObjectKey{Namespace: ns, Name: "app"}, kilnv1.BuildTriggerCause{Message: "deadline"}, false)
		if err != nil {
			t.Fatal(err)
		}
		c.phase(t, ns, b.Name, kilnv1.BuildPhasePending)
		c.setPod(t, ns, b.Name, runningStatus())
		if got := c.phase(t, ns, b.Name, kilnv1.BuildPhaseFailed); got.Status.Reason != kilnv1.ReasonDeadlineExceeded {
			t.Errorf("reason %s", got.Status.Reason)
		}
	})

	t.Run("run policies", func(t *testing.T) {
		for _, tt := range []struct {
			policy kilnv1.RunPolicy
			// after three builds, with the first running: the phases of 2 and 3, then of 2
			// and 3 once the first ends.
			queued, after [2]kilnv1.BuildPhase
		}{
			{kilnv1.RunPolicySerial, [2]kilnv1.BuildPhase{kilnv1.BuildPhaseNew, kilnv1.BuildPhaseNew},
				[2]kilnv1.BuildPhase{kilnv1.BuildPhasePending, kilnv1.BuildPhaseNew}},
			{kilnv1.RunPolicySerialLatestOnly, [2]kilnv1.BuildPhase{kilnv1.BuildPhaseCancelled, kilnv1.BuildPhaseNew},
				[2]kilnv1.BuildPhase{kilnv1.BuildPhaseCancelled, kilnv1.BuildPhasePending}},
			{kilnv1.RunPolicyParallel, [2]kilnv1.BuildPhase{kilnv1.BuildPhasePending, kilnv1.BuildPhasePending},
				[2]kilnv1.BuildPhase{kilnv1.BuildPhasePending, kilnv1.BuildPhasePending}},
		} {
			t.Run(string(tt.policy), func(t *testing.T) {
				ns := c.namespace(t)
				if err := c.client.Create(ctx, buildConfig(ns, "app", tt.policy)); err != nil {
					t.Fatal(err)
				}
				key := client.ObjectKey{Namespace: ns, Name: "app"}
				first, _ := Instantiate(ctx, c.client, key, kilnv1.BuildTriggerCause{Message: "1"}, false)
				c.phase(t, ns, first.Name, kilnv1.BuildPhasePending)
				c.setPod(t, ns, first.Name, runningStatus())
				c.phase(t, ns, first.Name, kilnv1.BuildPhaseRunning)
				second, _ := Instantiate(ctx, c.client, key, kilnv1.BuildTriggerCause{Message: "2"}, false)
				third, _ := Instantiate(ctx, c.client, key, kilnv1.BuildTriggerCause{Message: "3"}, false)
				c.phase(t, ns, second.Name, tt.queued[0])
				c.phase(t, ns, third.Name, tt.queued[1])
				// Give a wrong admission time to show itself before checking again.
				time.Sleep(time.Second)
				c.phase(t, ns, second.Name, tt.queued[0])
				c.phase(t, ns, third.Name, tt.queued[1])
				c.setPod(t, ns, first.Name, endedStatus(0, "Completed", `{"digest":"sha256:1"}`))
				c.phase(t, ns, first.Name, kilnv1.BuildPhaseComplete)
				c.phase(t, ns, second.Name, tt.after[0])
				c.phase(t, ns, third.Name, tt.after[1])
			})
		}
	})

	t.Run("history limits", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel)
		bc.Spec.SuccessfulBuildsHistoryLimit, bc.Spec.FailedBuildsHistoryLimit = ptr.To[int32](1), ptr.To[int32](1)
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		key := client.ObjectKey{Namespace: ns, Name: "app"}
		for i, code := range []int32{0, 1, 0, 1, 0} {
			b, _ := Instantiate(ctx, c.client, key, kilnv1.BuildTriggerCause{Message: fmt.Sprint(i)}, false)
			c.phase(t, ns, b.Name, kilnv1.BuildPhasePending)
			c.setPod(t, ns, b.Name, endedStatus(code, "", `{"digest":"sha256:1"}`))
		}
		eventually(t, "pruning", func() error {
			var list kilnv1.BuildList
			if err := c.client.List(ctx, &list, client.InNamespace(ns)); err != nil {
				return err
			}
			var names []string
			for _, b := range list.Items {
				names = append(names, b.Name)
			}
			if fmt.Sprint(names) != "[app-4 app-5]" {
				return fmt.Errorf("builds left: %v", names)
			}
			return nil
		})
	})

	t.Run("controller restart mid-build", func(t *testing.T) {
		ns := c.namespace(t)
		if err := c.client.Create(ctx, buildConfig(ns, "app", kilnv1.RunPolicySerial, kilnv1.TriggerConfigChange)); err != nil {
			t.Fatal(err)
		}
		c.phase(t, ns, "app-1", kilnv1.BuildPhasePending)
		c.setPod(t, ns, "app-1", runningStatus())
		c.phase(t, ns, "app-1", kilnv1.BuildPhaseRunning)
		stop()
		c.setPod(t, ns, "app-1", endedStatus(0, "Completed", `{"digest":"sha256:restart"}`))
		time.Sleep(500 * time.Millisecond)
		if b := c.phase(t, ns, "app-1", kilnv1.BuildPhaseRunning); b.Status.Output.Digest != "" {
			t.Fatal("a stopped controller updated the build")
		}
		stop = c.startController(t)
		if b := c.phase(t, ns, "app-1", kilnv1.BuildPhaseComplete); b.Status.Output.Digest != "sha256:restart" {
			t.Errorf("digest %q", b.Status.Output.Digest)
		}
		var bc kilnv1.BuildConfig
		c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, &bc)
		if bc.Status.LastVersion != 1 {
			t.Errorf("the restarted controller started another build: lastVersion %d", bc.Status.LastVersion)
		}
	})
}
