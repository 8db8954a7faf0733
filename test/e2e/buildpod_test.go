package e2e

import (
	"context"
	"encoding/json"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/controller"
	"github.com/kiln-build/kiln/test/podlike"
)

// TestBuildPodInPodLikeContainer runs the pod the controller renders for a Build, container by
// container as a kubelet would, in a pod-like runc container: the builder image kiln builds
// for itself (FROM scratch), the pod's user namespace of 65536 ids, its capabilities (SETUID
// and SETGID only), no new privileges, its volumes as host directories. The build pushes to
// the local registry, and the result the builder leaves in its termination message names the
// digest skopeo reads there, all under kiln's seccomp profile (config/seccomp). Not covered
// here: a real kubelet (issue 8).
func TestBuildPodInPodLikeContainer(t *testing.T) {
	kilnBuildWorks(t)
	needRegistry(t)
	needTool(t, "runc")
	ref := registryAddr + "/e2e/buildpod:v1"
	b := &kilnv1.Build{Spec: kilnv1.BuildSpec{CommonSpec: kilnv1.CommonSpec{
		Source:   kilnv1.BuildSource{Dockerfile: ptr.To("FROM " + registryAddr + "/busybox:latest\nRUN echo built-in-a-build-pod > /proof\n")},
		Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}},
		Output:   kilnv1.BuildOutput{To: ref},
	}}}
	checkBuildPodResult(t, runBuildPod(t, b), ref)
}

// TestS2IBuildPodInPodLikeContainer runs the pod of a sourceStrategy Build: the fetch
// container clones the application from a git smart-HTTP server, and the builder runs
// kiln s2i build with the builder image of the s2i suite.
func TestS2IBuildPodInPodLikeContainer(t *testing.T) {
	kilnBuildWorks(t)
	needRegistry(t)
	needTool(t, "runc")
	builder := registryAddr + "/e2e/s2i-builder:v1"
	if _, stderr, err := runKiln(t, Root, "build", "-t", builder, "--push", contextFor(t, Root, filepath.Join("testdata", "s2i", "builder"))); err != nil {
		t.Fatalf("building the s2i builder image: %v\n%s", err, tail(stderr, 20))
	}
	uri := gitServer(t, filepath.Join("testdata", "s2i", "source"))
	ref := registryAddr + "/e2e/s2i-pod:v1"
	b := &kilnv1.Build{Spec: kilnv1.BuildSpec{CommonSpec: kilnv1.CommonSpec{
		Source:   kilnv1.BuildSource{Git: &kilnv1.GitSource{URI: uri, Ref: "main"}},
		Strategy: kilnv1.BuildStrategy{Source: &kilnv1.SourceStrategy{From: builder, Env: []corev1.EnvVar{{Name: "EXTRA", Value: "1"}}}},
		Output:   kilnv1.BuildOutput{To: ref},
	}}}
	checkBuildPodResult(t, runBuildPod(t, b), ref)
}

// gitServer commits the files of dir into a new repository (branch main) and serves it over
// git's smart HTTP (git http-backend) on a loopback port; it returns the clone URL.
func gitServer(t *testing.T, dir string) string {
	t.Helper()
	needTool(t, "git")
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git http-backend is missing: %v; remedy: apt-get install -y git", err)
	}
	root := t.TempDir()
	repo := filepath.Join(root, "app")
	if err := os.CopyFS(repo, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "app"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@e", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@e")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(srv.Close)
	return srv.URL + "/app"
}

// checkBuildPodResult checks a build pod's result against the registry.
func checkBuildPodResult(t *testing.T, res kilnv1.BuildResult, ref string) {
	t.Helper()
	if res.Reason != "" || res.Image != ref || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("result %+v", res)
	}
	digest := strings.TrimSpace(mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref))
	if digest != res.Digest {
		t.Errorf("the registry has %s for %s, the build pod reported %s", digest, ref, res.Digest)
	}
}

// runBuildPod renders the pod of b as the controller does and runs its containers in order in
// a pod-like container, returning the builder's termination message.
func runBuildPod(t *testing.T, b *kilnv1.Build) kilnv1.BuildResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The builder image, as `make images` builds it.
	imgCtx := t.TempDir()
	for src, dst := range map[string]string{
		filepath.Join(root, "images", "builder", "Dockerfile"): "Dockerfile",
		filepath.Join(root, "images", "passwd"):                "passwd",
		filepath.Join(root, "images", "group"):                 "group",
		"/etc/ssl/certs/ca-certificates.crt":                   "ca-certificates.crt",
		suite.kiln:                                             "kiln",
	} {
		if err := copyFile(src, filepath.Join(imgCtx, dst), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	builderLayout := filepath.Join(userDir(t, Root, "builder"), "layout")
	if _, stderr, err := runKiln(t, Root, "build", "--source-date-epoch", "0", "-o", "type=oci,dest="+builderLayout, imgCtx); err != nil {
		t.Fatalf("building the builder image: %v\n%s", err, tail(stderr, 10))
	}
	builder, err := readLayoutImage(builderLayout, "")
	if err != nil {
		t.Fatal(err)
	}
	builderCfg, err := builder.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	b.Name, b.Namespace = "app-1", "ci"
	pod, err := controller.BuildPod(b, controller.PodOptions{BuilderImage: "kiln", SeccompProfile: "kiln/kiln-seccomp.json"})
	if err != nil {
		t.Fatal(err)
	}

	p, err := podlike.New(ctx, filepath.Join(userDir(t, Root, "pod"), "bundle"), podlike.WithImage(builderLayout))
	if err != nil {
		t.Fatal(err)
	}
	// Volumes are host directories owned by the pod's root, as emptyDirs are.
	volumes := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil {
			t.Fatalf("volume %s is not an emptyDir; this test knows only those", v.Name)
		}
		dir := filepath.Join(p.StoreDir(), "volumes", v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, p.HostID(0), p.HostID(0)); err != nil {
			t.Fatal(err)
		}
		volumes[v.Name] = dir
	}
	uid := int(*pod.Spec.SecurityContext.RunAsUser)
	// The pod's Localhost seccomp profile, as the node would load it from its seccomp directory.
	sp := pod.Spec.SecurityContext.SeccompProfile
	if sp.Type != corev1.SeccompProfileTypeLocalhost || *sp.LocalhostProfile != "kiln/kiln-seccomp.json" {
		t.Fatalf("the pod's seccomp profile is %+v, not kiln's", sp)
	}
	profile, err := os.ReadFile(filepath.Join(root, "config", "seccomp", "kiln-seccomp.json"))
	if err != nil {
		t.Fatal(err)
	}
	var result string
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		binds := []podlike.Bind{}
		for _, m := range c.VolumeMounts {
			binds = append(binds, podlike.Bind{Host: volumes[m.Name], Container: m.MountPath, ReadOnly: m.ReadOnly})
		}
		if c.TerminationMessagePath != "" {
			result = filepath.Join(p.StoreDir(), c.Name+".termination-log")
			if err := os.WriteFile(result, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Chown(result, p.HostID(0), p.HostID(0))
			binds = append(binds, podlike.Bind{Host: result, Container: c.TerminationMessagePath})
		}
		env := append([]string(nil), builderCfg.Config.Env...)
		for _, e := range c.Env {
			env = append(env, e.Name+"="+e.Value)
		}
		var caps []string
		for _, capability := range c.SecurityContext.Capabilities.Add {
			caps = append(caps, "CAP_"+string(capability))
		}
		stdout, stderr, err := p.RunContainer(ctx, podlike.Container{
			UID:             uid,
			Args:            append(append([]string(nil), builderCfg.Config.Entrypoint...), c.Args...),
			Env:             env,
			Capabilities:    caps,
			NoNewPrivileges: !*c.SecurityContext.AllowPrivilegeEscalation,
			Binds:           binds,
			Seccomp:         profile,
		})
		t.Logf("container %s:\n%s%s", c.Name, tail(stdout, 10), tail(stderr, 30))
		if err != nil {
			t.Fatalf("container %s: %v", c.Name, err)
		}
	}

	data, err := os.ReadFile(result)
	if err != nil {
		t.Fatal(err)
	}
	var res kilnv1.BuildResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("the termination message is not a BuildResult: %v\n%s", err, data)
	}
	return res
}
