package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/test/podlike"
)

// kilnBuildWorks skips t unless kiln can build a FROM scratch context as
// root on the host: tests of kiln in harder places are noise until then.
func kilnBuildWorks(t *testing.T) {
	t.Helper()
	needKiln(t)
	needRoot(t)
	ctxDir := userDir(t, Root, "probe-context")
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\nCOPY Dockerfile /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runKiln(t, Root, "build", ctxDir); err != nil {
		t.Skipf("kiln build of a FROM scratch context fails on the host as root (%v: %s); "+
			"remedy: make TestHello pass first, then this test runs by itself", err, tail(stderr, 3))
	}
}

// TestPodLike runs kiln inside a pod-like container (user namespace of 65536
// ids, containerd's capabilities and masks, emptyDir store) as uid 0 and 1000:
// `kiln doctor`, then a build FROM the busybox fixture with a RUN step.
func TestPodLike(t *testing.T) {
	kilnBuildWorks(t)
	needRegistry(t)
	dir := filepath.Join(userDir(t, Root, "pod"), "bundle")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pod, err := podlike.New(ctx, dir, podlike.WithBinary(suite.kiln, "/usr/local/bin/kiln"))
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(pod.StoreDir(), "context")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dockerfile := "FROM " + registryAddr + "/busybox:latest\nRUN echo built-in-pod > /proof\nCMD [\"cat\", \"/proof\"]\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []int{0, 1000} {
		t.Run(map[int]string{0: "uid0", 1000: "uid1000"}[uid], func(t *testing.T) {
			home := filepath.Join(pod.StoreDir(), "u"+strings.TrimPrefix(t.Name(), "TestPodLike/uid"))
			if err := os.MkdirAll(home, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(home, pod.HostID(uid), pod.HostID(uid)); err != nil {
				t.Fatal(err)
			}
			in := filepath.Join(podlike.StorePath, filepath.Base(home))
			store, out := filepath.Join(in, "store"), filepath.Join(in, "oci")
			stdout, stderr, err := pod.Run(ctx, uid, "kiln", "doctor", "--root", store)
			t.Logf("kiln doctor in pod as uid %d:\n%s\n%s", uid, stdout, stderr)
			if err != nil {
				t.Errorf("kiln doctor in pod as uid %d: %v", uid, err)
			}
			ref := fmt.Sprintf("%s/e2e/podlike:uid%d", registryAddr, uid)
			_, stderr, err = pod.Run(ctx, uid, "kiln", "build", "--root", store,
				"--output", "type=oci,dest="+out, "--insecure-registry", registryAddr,
				"-t", ref, "--push", filepath.Join(podlike.StorePath, "context"))
			if err != nil {
				t.Fatalf("kiln build in pod as uid %d: %v\n%s", uid, err, tail(stderr, 60))
			}
			if d := mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref); !strings.HasPrefix(d, "sha256:") {
				t.Errorf("the image pushed from the pod is not in the registry: skopeo says %q", d)
			}
			layout := filepath.Join(home, "oci")
			if got := strings.TrimSpace(runBundle(t, umociUnpack(t, layout, ""))); got != "built-in-pod" {
				t.Errorf("image built in pod prints %q, want %q", got, "built-in-pod")
			}
		})
	}
}
