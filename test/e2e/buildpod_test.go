package e2e

import (
	"context"
	"encoding/json"
	"os"
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

	// The pod the controller renders for a build of an inline Dockerfile.
	ref := registryAddr + "/e2e/buildpod:v1"
	b := &kilnv1.Build{Spec: kilnv1.BuildSpec{CommonSpec: kilnv1.CommonSpec{
		Source:   kilnv1.BuildSource{Dockerfile: ptr.To("FROM " + registryAddr + "/busybox:latest\nRUN echo built-in-a-build-pod > /proof\n")},
		Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}},
		Output:   kilnv1.BuildOutput{To: ref},
	}}}
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
	if res.Reason != "" || res.Image != ref || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("result %+v", res)
	}
	digest := strings.TrimSpace(mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref))
	if digest != res.Digest {
		t.Errorf("the registry has %s for %s, the build pod reported %s", digest, ref, res.Digest)
	}
}
