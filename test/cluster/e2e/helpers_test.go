package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/controller"
)

// ---------------------------------------------------------------- builds

// imageRef is a repository of this run in the registry, as pods name it.
func (e *clusterEnv) imageRef(name string) string {
	return e.podRegistry + "/kiln-e2e/" + e.run + "/" + name + ":latest"
}

// hostRef is ref as the host names the same registry (for skopeo).
func (e *clusterEnv) hostRef(ref string) string {
	return e.registry + strings.TrimPrefix(ref, e.podRegistry)
}

// inlineBuild is a Build of its own (no BuildConfig) of an inline Dockerfile, pushed to
// imageRef(name).
func (e *clusterEnv) inlineBuild(name, dockerfile string) *kilnv1.Build {
	return &kilnv1.Build{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: kilnv1.BuildSpec{CommonSpec: kilnv1.CommonSpec{
			Source:   kilnv1.BuildSource{Dockerfile: ptr.To(dockerfile)},
			Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}},
			Output:   kilnv1.BuildOutput{To: e.imageRef(name)},
		}},
	}
}

func (e *clusterEnv) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := e.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (e *clusterEnv) getBuild(t *testing.T, name string) *kilnv1.Build {
	t.Helper()
	var b kilnv1.Build
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, &b); err != nil {
		t.Fatalf("reading build %s: %v", name, err)
	}
	return &b
}

// waitBuild polls build name until done says so; on timeout it shows what the build, its pod
// and the controller say, and fails naming what it waited for.
func (e *clusterEnv) waitBuild(t *testing.T, name string, timeout time.Duration, what string, done func(*kilnv1.Build) bool) *kilnv1.Build {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		var b kilnv1.Build
		lastErr = e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, &b)
		if lastErr == nil && done(&b) {
			return &b
		}
		if time.Now().After(deadline) {
			e.dumpBuild(t, name)
			t.Fatalf("build %s: waited %s for %s; phase %q reason %q message %q (last error: %v)",
				name, timeout, what, b.Status.Phase, b.Status.Reason, b.Status.Message, lastErr)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitFinal waits for a build to reach a final phase.
func (e *clusterEnv) waitFinal(t *testing.T, name string, timeout time.Duration) *kilnv1.Build {
	t.Helper()
	return e.waitBuild(t, name, timeout, "a final phase", func(b *kilnv1.Build) bool { return b.Status.Phase.Final() })
}

// expectPhase fails (showing the build's story) unless b ended in phase with reason ("" for
// any reason).
func (e *clusterEnv) expectPhase(t *testing.T, b *kilnv1.Build, phase kilnv1.BuildPhase, reason kilnv1.BuildReason) {
	t.Helper()
	if b.Status.Phase == phase && (reason == "" || b.Status.Reason == reason) {
		return
	}
	e.dumpBuild(t, b.Name)
	t.Fatalf("build %s ended %s (reason %q, message %q), want %s%s", b.Name, b.Status.Phase, b.Status.Reason,
		b.Status.Message, phase, map[bool]string{true: "", false: " with reason " + string(reason)}[reason == ""])
}

// dumpBuild logs what there is to know about a build that did not do what a test wanted: its
// status, its pod's containers, the end of its log, and the end of the controller's log.
func (e *clusterEnv) dumpBuild(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b kilnv1.Build
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, &b); err != nil {
		t.Logf("dump of build %s: reading it: %v", name, err)
	} else {
		st, _ := json.MarshalIndent(b.Status, "    ", "  ")
		t.Logf("dump of build %s: status:\n    %s", name, st)
	}
	pod := controller.PodName(&b)
	if b.Status.PodName != "" {
		pod = b.Status.PodName
	}
	if p, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, pod, metav1.GetOptions{}); err != nil {
		t.Logf("dump of build %s: pod %s: %v", name, pod, err)
	} else {
		st, _ := json.MarshalIndent(struct {
			Phase, Reason, Message string
			Init, Main             []corev1.ContainerStatus
		}{string(p.Status.Phase), p.Status.Reason, p.Status.Message, p.Status.InitContainerStatuses, p.Status.ContainerStatuses}, "    ", "  ")
		t.Logf("dump of build %s: pod %s:\n    %s", name, pod, st)
	}
	var log bytes.Buffer
	complete, err := controller.WriteSavedLog(ctx, e.c, e.ns, name, &log)
	t.Logf("dump of build %s: saved log (complete %v, error %v), last lines:\n%s", name, complete, err, indent(lastLines(log.String(), 30)))
	t.Logf("dump of build %s: the controller's log, last lines:\n%s", name, indent(e.controllerLog(ctx, 30)))
}

// controllerLog is the end of the kiln-controller's log.
func (e *clusterEnv) controllerLog(ctx context.Context, lines int64) string {
	pods, err := e.cs.CoreV1().Pods("kiln-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kiln-controller"})
	if err != nil || len(pods.Items) == 0 {
		return fmt.Sprintf("(no controller pod: %v)", err)
	}
	out, err := e.cs.CoreV1().Pods("kiln-system").GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{TailLines: &lines}).DoRaw(ctx)
	if err != nil {
		return fmt.Sprintf("(reading the controller's log: %v)", err)
	}
	return string(out)
}

// savedLog is the log the controller saved for a build, once it is complete.
func (e *clusterEnv) savedLog(t *testing.T, name string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var buf bytes.Buffer
		complete, err := controller.WriteSavedLog(context.Background(), e.c, e.ns, name, &buf)
		if err == nil && complete {
			return buf.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s: its saved log is not complete after 60s (error %v); so far:\n%s", name, err, indent(lastLines(buf.String(), 20)))
		}
		time.Sleep(time.Second)
	}
}

// podLog is the log of one container of a pod in the run's namespace.
func (e *clusterEnv) podLog(t *testing.T, pod, container string) string {
	t.Helper()
	out, err := e.cs.CoreV1().Pods(e.ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("reading the log of %s/%s: %v", pod, container, err)
	}
	return string(out)
}

// waitPodLog waits until a container's log contains want (the container is running that far).
func (e *clusterEnv) waitPodLog(t *testing.T, pod, container, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := e.cs.CoreV1().Pods(e.ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
		if err == nil && strings.Contains(string(out), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: container %s did not print %q within %s (last error %v); its log:\n%s", pod, container, want, timeout, err, indent(string(out)))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitPodGone waits until a pod no longer exists.
func (e *clusterEnv) waitPodGone(t *testing.T, pod string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := e.cs.CoreV1().Pods(e.ns).Get(context.Background(), pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still exists %s after it was deleted (error %v)", pod, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// deletePod deletes a pod at once (no grace period) and waits until it is gone.
func (e *clusterEnv) deletePod(t *testing.T, pod string) {
	t.Helper()
	err := e.cs.CoreV1().Pods(e.ns).Delete(context.Background(), pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil {
		t.Fatalf("deleting pod %s: %v", pod, err)
	}
	e.waitPodGone(t, pod, 90*time.Second)
}

// runPod creates a pod, waits until it ends and returns its phase and the log of its first
// container.
func (e *clusterEnv) runPod(t *testing.T, pod *corev1.Pod, timeout time.Duration) (corev1.PodPhase, string) {
	t.Helper()
	pod.Namespace = e.ns
	ctx := context.Background()
	if _, err := e.cs.CoreV1().Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", pod.Name, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		p, err := e.cs.CoreV1().Pods(e.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			return p.Status.Phase, e.podLog(t, pod.Name, pod.Spec.Containers[0].Name)
		}
		if time.Now().After(deadline) {
			var st []byte
			if p != nil {
				st, _ = json.MarshalIndent(p.Status, "    ", "  ")
			}
			t.Fatalf("pod %s did not end within %s (error %v); status:\n    %s", pod.Name, timeout, err, st)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- tools

// runBuiltImage runs the image a build pushed to ref (by the digest in its status) as a pod
// named name, with nothing from the cluster mounted, and returns how it ended and its log.
func (e *clusterEnv) runBuiltImage(t *testing.T, name, ref string, b *kilnv1.Build) (string, corev1.PodPhase, string) {
	t.Helper()
	image := strings.TrimSuffix(ref, ":latest") + "@" + b.Status.Output.Digest
	phase, log := e.runPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			Containers:                   []corev1.Container{{Name: "app", Image: image}},
		},
	}, 3*time.Minute)
	return image, phase, log
}

// kilnCmd runs bin/kiln (which execs bin/kiln-kube for the client verbs) on the run's namespace.
func (e *clusterEnv) kilnCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.kiln, append(args, "-n", e.ns)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	return cmd
}

// kilnRun runs bin/kiln and returns its stdout; it fails the test if kiln fails.
func (e *clusterEnv) kilnRun(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.kilnCmd(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kiln %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, indent(stdout.String()), indent(stderr.String()))
	}
	return stdout.String()
}

// registryDigest is the manifest digest the registry has for ref (a pod-side reference), by
// skopeo inspect from the host.
func (e *clusterEnv) registryDigest(t *testing.T, ref string) string {
	t.Helper()
	ref = e.hostRef(ref)
	out, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect docker://%s: %v\n%s", ref, err, out)
	}
	return strings.TrimSpace(string(out))
}

// gitServer commits files into a new repository (branch main) and serves it over git's smart
// HTTP (git http-backend) on the node's address, where pods reach it; it returns the clone URL.
func (e *clusterEnv) gitServer(t *testing.T, files map[string]string) string {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is missing: %v; remedy: apt-get install -y git", err)
	}
	root := t.TempDir()
	repo := filepath.Join(root, "app")
	for name, content := range files {
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "app"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=kiln e2e", "GIT_AUTHOR_EMAIL=e2e@kiln.invalid",
			"GIT_COMMITTER_NAME=kiln e2e", "GIT_COMMITTER_EMAIL=e2e@kiln.invalid")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("making the git repository: git %v: %v\n%s", args, err, out)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(e.nodeIP, "0"))
	if err != nil {
		t.Fatalf("the git server: listening on the node's address %s: %v", e.nodeIP, err)
	}
	srv := &http.Server{
		Handler:           &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/app"
}

// readFiles reads a testdata directory into a map of relative path to content.
func readFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	return files
}

// ---------------------------------------------------------------- text

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
