package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const helloOutput = "hello from an image built by kiln"

// helloContext copies examples/hello for u with its program compiled in.
func helloContext(t *testing.T, u User) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := contextFor(t, u, filepath.Join(root, "examples", "hello"))
	bin := filepath.Join(dir, "hello")
	if _, err := os.Stat(bin); err == nil {
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/hello")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building examples/hello: %v\n%s", err, out)
	}
	a := u.lookup(t)
	if err := os.Chown(bin, a.uid, a.gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestHello builds examples/hello as every user to each output kind the CLI
// contract names, and checks each result with skopeo and runc.
func TestHello(t *testing.T) {
	needKiln(t)
	needRoot(t)
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			ctxDir := helloContext(t, u)
			out := userDir(t, u, "out")
			layout := filepath.Join(out, "oci")
			ociTar := filepath.Join(out, "hello-oci.tar")
			dockerTar := filepath.Join(out, "hello-docker.tar")
			digestFile := filepath.Join(out, "digest")
			_, stderr, err := runKiln(t, u, "build", "-t", "hello:e2e",
				"--output", "type=oci,dest="+layout,
				"--digest-file", digestFile, ctxDir)
			if err != nil {
				t.Fatalf("kiln build: %v\n%s", err, tail(stderr, 40))
			}
			got := strings.TrimSpace(runBundle(t, umociUnpack(t, layout, "")))
			if got != helloOutput {
				t.Errorf("hello image prints %q, want %q", got, helloOutput)
			}
			img := skopeoInspect(t, layout)
			if want := "hello"; img.Config.Config.Labels["org.opencontainers.image.title"] != want {
				t.Errorf("label org.opencontainers.image.title = %q, want %q", img.Config.Config.Labels["org.opencontainers.image.title"], want)
			}
			if d, err := os.ReadFile(digestFile); err != nil || !strings.HasPrefix(strings.TrimSpace(string(d)), "sha256:") {
				t.Errorf("--digest-file: %q, %v; want a sha256: digest", d, err)
			}

			for _, o := range []struct{ output, file string }{
				{"type=oci,dest=" + ociTar, ociTar},
				{"type=docker,dest=" + dockerTar, dockerTar},
			} {
				if _, stderr, err := runKiln(t, u, "build", "--output", o.output, ctxDir); err != nil {
					t.Errorf("kiln build --output %s: %v\n%s", o.output, err, tail(stderr, 40))
					continue
				}
				if img := skopeoInspect(t, o.file); len(img.Layers) != 1 {
					t.Errorf("%s: %d layers, want 1", o.file, len(img.Layers))
				}
			}
		})
	}
}

// TestPush builds and pushes to the test registry as every user.
func TestPush(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			ref := registryAddr + "/e2e/hello:" + string(u)
			_, stderr, err := runKiln(t, u, "build", "-t", ref, "--push",
				"--insecure-registry", registryAddr, helloContext(t, u))
			if err != nil {
				t.Fatalf("kiln build --push: %v\n%s", err, tail(stderr, 40))
			}
			stdout := mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref)
			if !strings.HasPrefix(stdout, "sha256:") {
				t.Errorf("skopeo inspect %s: %q", ref, stdout)
			}
		})
	}
}

// TestImagesAndDoctor runs the two read-only verbs as every user.
func TestImagesAndDoctor(t *testing.T) {
	needKiln(t)
	needRoot(t)
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			if _, stderr, err := runKiln(t, u, "build", "-t", "hello:listed", helloContext(t, u)); err != nil {
				t.Fatalf("kiln build: %v\n%s", err, tail(stderr, 40))
			}
			stdout, stderr, err := runKiln(t, u, "images")
			if err != nil {
				t.Fatalf("kiln images: %v\n%s", err, stderr)
			}
			if !strings.Contains(stdout, "hello") {
				t.Errorf("kiln images does not list hello:listed:\n%s", stdout)
			}
			if stdout, stderr, err = runKiln(t, u, "doctor"); err != nil {
				t.Errorf("kiln doctor: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
		})
	}
}
