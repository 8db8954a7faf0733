package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/controller"
)

// cannedLogs plays the kubelet's log endpoint.
type cannedLogs struct{}

func (cannedLogs) Open(_ context.Context, _, pod, container string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(pod + "/" + container + " says hello\n")), nil
}

// TestClientVerbs runs start-build, get builds, logs and cancel-build against a real API
// server with the controller running (the test plays the kubelet).
func TestClientVerbs(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; remedy: export KUBEBUILDER_ASSETS=$(hack/kube/build.sh) (make test does this)")
	}
	ctrl.SetLogger(logr.Discard())
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	kilnv1.AddToScheme(scheme)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := controller.Setup(mgr, controller.PodOptions{BuilderImage: "kiln"}, cannedLogs{}, controller.TriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go mgr.Start(ctx)

	c, _ := client.New(cfg, client.Options{Scheme: scheme})
	cs, _ := kubernetes.NewForConfig(cfg)
	cl := &cluster{config: cfg, client: c, clientset: cs, namespace: "default"}
	bc := &kilnv1.BuildConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "app"}, Spec: kilnv1.BuildConfigSpec{
		CommonSpec: kilnv1.CommonSpec{Source: kilnv1.BuildSource{Dockerfile: ptr.To("FROM scratch")},
			Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}}, Output: kilnv1.BuildOutput{To: "r.test/app"}},
		RunPolicy: kilnv1.RunPolicyParallel}}
	if err := c.Create(ctx, bc); err != nil {
		t.Fatal(err)
	}
	root := newStartBuildCommand()
	root.SetArgs([]string{"app", "--env", "SOURCE_DATE_EPOCH=1"})
	root.SetContext(ctx)
	// start-build connects through the kubeconfig; point it at envtest's.
	kubeconfig := writeKubeconfig(t, env)
	root.Flags().Set("kubeconfig", kubeconfig)
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var b kilnv1.Build
	waitFor(t, func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "app-1"}, &b) == nil && b.Status.Phase == kilnv1.BuildPhasePending
	})
	if env := b.Spec.Strategy.Docker.Env; len(env) != 1 || env[0].Value != "1" {
		t.Errorf("--env did not reach the build: %+v", env)
	}
	// The kubelet's part: the pod runs, then succeeds.
	var pod corev1.Pod
	c.Get(ctx, client.ObjectKey{Namespace: "default", Name: b.Status.PodName}, &pod)
	now := metav1.Now()
	done := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, StartedAt: now, FinishedAt: now, Message: `{"digest":"sha256:feed"}`}}
	pod.Status = corev1.PodStatus{Phase: corev1.PodSucceeded,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "fetch-source", State: done}},
		ContainerStatuses:     []corev1.ContainerStatus{{Name: "build", State: done}}}
	if err := c.Status().Update(ctx, &pod); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "app-1"}, &b) == nil && b.Status.Phase == kilnv1.BuildPhaseComplete
	})
	var list kilnv1.BuildList
	c.List(ctx, &list)
	var table bytes.Buffer
	printBuilds(&table, list.Items)
	if !strings.Contains(table.String(), "app-1") || !strings.Contains(table.String(), "Complete") || !strings.Contains(table.String(), "sha256:feed") {
		t.Errorf("get builds:\n%s", table.String())
	}
	// Once the controller has saved the log, the pod goes; kiln logs still prints it all.
	waitFor(t, func() bool {
		complete, err := controller.WriteSavedLog(ctx, c, "default", "app-1", io.Discard)
		return err == nil && complete
	})
	c.Delete(ctx, &pod)
	var out bytes.Buffer
	if err := cl.printLog(ctx, "app-1", false, &out); err != nil {
		t.Fatal(err)
	}
	if want := "app-1-build/fetch-source says hello\napp-1-build/build says hello\n"; out.String() != want {
		t.Errorf("kiln logs printed %q, want %q", out.String(), want)
	}

	// cancel-build stops a queued build.
	b2, err := controller.Instantiate(ctx, c, client.ObjectKey{Namespace: "default", Name: "app"}, kilnv1.BuildTriggerCause{Message: "t"}, false)
	if err != nil {
		t.Fatal(err)
	}
	cancelCmd := newCancelBuildCommand()
	cancelCmd.SetArgs([]string{b2.Name, "--kubeconfig", kubeconfig})
	cancelCmd.SetContext(ctx)
	if err := cancelCmd.Execute(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(b2), &b) == nil && b.Status.Phase == kilnv1.BuildPhaseCancelled
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeKubeconfig writes a kubeconfig for envtest's API server.
func writeKubeconfig(t *testing.T, env *envtest.Environment) string {
	t.Helper()
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "kiln-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
