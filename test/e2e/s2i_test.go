package e2e

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The s2i test data: a builder image whose scripts are inside it (image:///usr/libexec/s2i,
// sources in /tmp), a runtime image with its own run script, and an application source with
// .s2i/environment and a .s2iignore'd file.
const (
	s2iBuilderImage = "s2i-builder:e2e"
	s2iRuntimeImage = "s2i-runtime:e2e"
	s2iAppText      = "hello from an s2i build\n"
)

// TestS2I runs `kiln s2i build` for real: as the unprivileged SubUser through every mode
// (push, incremental, inject, runtime image, --as-dockerfile), and once as Root.
func TestS2I(t *testing.T) {
	needKiln(t)
	needRoot(t)
	needRegistry(t)
	t.Run(string(SubUser), func(t *testing.T) { s2iFullRun(t, SubUser) })
	t.Run(string(Root), func(t *testing.T) { s2iBasicRun(t, Root) })
}

// s2iSetup builds the builder image into u's store and copies the source for u.
func s2iSetup(t *testing.T, u User) (store, src string) {
	t.Helper()
	store = storeDir(t, u)
	if _, stderr, err := runKiln(t, u, "build", "-t", s2iBuilderImage, contextFor(t, u, filepath.Join("testdata", "s2i", "builder"))); err != nil {
		t.Fatalf("building the builder image: %v\n%s", err, tail(stderr, 40))
	}
	return store, contextFor(t, u, filepath.Join("testdata", "s2i", "source"))
}

// s2iBuild runs `kiln s2i build` as u with u's store and returns the digest it prints.
func s2iBuild(t *testing.T, u User, store string, args ...string) (digest, stderr string) {
	t.Helper()
	stdout, stderr, err := runKiln(t, u, append([]string{"s2i", "build", "--root", store}, args...)...)
	if err != nil {
		t.Fatalf("kiln s2i build %s: %v\n%s", strings.Join(args, " "), err, tail(stderr, 60))
	}
	digest = strings.TrimSpace(stdout)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("kiln s2i build printed %q, want the image digest", stdout)
	}
	return digest, stderr
}

func s2iBasicRun(t *testing.T, u User) {
	store, src := s2iSetup(t, u)
	out := filepath.Join(userDir(t, u, "out"), "app")
	s2iBuild(t, u, store, src, s2iBuilderImage, "s2i-app:"+string(u), "-o", "type=oci,dest="+out)
	img := readS2IImage(t, out)
	checkS2IApp(t, img, src, "s2i-app:"+string(u))
	if got := imageFile(t, img, "/opt/cache/count"); got != "1\n" {
		t.Errorf("/opt/cache/count = %q, want 1: one build", got)
	}
}

func s2iFullRun(t *testing.T, u User) {
	store, src := s2iSetup(t, u)
	outDir := userDir(t, u, "out")
	tag := registryAddr + "/e2e/s2i-app:" + string(u)

	// 1. A build pushed to the registry and exported as an OCI layout.
	first := filepath.Join(outDir, "first")
	digest, _ := s2iBuild(t, u, store, src, s2iBuilderImage, tag, "--push", "-o", "type=oci,dest="+first)
	img := readS2IImage(t, first)
	checkS2IApp(t, img, src, tag)
	if got := imageFile(t, img, "/opt/cache/count"); got != "1\n" {
		t.Errorf("first build: /opt/cache/count = %q, want 1", got)
	}
	if got := registryDigest(t, tag); got != digest {
		t.Errorf("the registry has %s for %s, kiln printed %s", got, tag, digest)
	}

	// 2. Incremental: the previous image's save-artifacts output reaches assemble.
	second := filepath.Join(outDir, "second")
	_, stderr := s2iBuild(t, u, store, src, s2iBuilderImage, tag, "--incremental", "--push", "-o", "type=oci,dest="+second)
	if !strings.Contains(stderr, "restored build count 1") {
		t.Errorf("assemble did not see the restored artifacts:\n%s", tail(stderr, 40))
	}
	img = readS2IImage(t, second)
	checkS2IApp(t, img, src, tag)
	if got := imageFile(t, img, "/opt/cache/count"); got != "2\n" {
		t.Errorf("incremental build: /opt/cache/count = %q, want 2 (1 restored from the previous image, plus this build)", got)
	}
	if got := imageFile(t, img, "/tmp/artifacts/count"); got != "1\n" {
		t.Errorf("/tmp/artifacts/count = %q, want the restored 1", got)
	}

	// 3. --inject: assemble reads the secret; no layer holds it.
	const secret = "s2i-e2e-secret-9f3a"
	secretFile := filepath.Join(userDir(t, u, "secrets"), "token")
	writeUserFile(t, u, secretFile, secret)
	injected := filepath.Join(outDir, "injected")
	s2iBuild(t, u, store, src, s2iBuilderImage, "s2i-injected:e2e",
		"--inject", secretFile+":/run/secrets/token", "-e", "CHECK_INJECTED=/run/secrets/token",
		"-o", "type=oci,dest="+injected)
	img = readS2IImage(t, injected)
	if got := imageFile(t, img, "/opt/app/injected.txt"); got != "injected file has 19 bytes\n" {
		t.Errorf("/opt/app/injected.txt = %q: assemble did not read the injected file", got)
	}
	tree, err := flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/run/secrets/token", "/run/secrets"} {
		if _, ok := tree[p]; ok {
			t.Errorf("%s is in the image", p)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if layerContains(t, l, secret) {
			t.Errorf("layer %d holds the injected secret", i)
		}
	}

	// 4. --runtime-image: the artifacts go into a separate image with its own run script.
	if _, stderr, err := runKiln(t, u, "build", "-t", s2iRuntimeImage, contextFor(t, u, filepath.Join("testdata", "s2i", "runtime"))); err != nil {
		t.Fatalf("building the runtime image: %v\n%s", err, tail(stderr, 40))
	}
	runtimeOut := filepath.Join(outDir, "runtime")
	s2iBuild(t, u, store, src, s2iBuilderImage, "s2i-runtime-app:e2e",
		"--runtime-image", s2iRuntimeImage, "--runtime-artifact", "/opt/app:/app", "-o", "type=oci,dest="+runtimeOut)
	img = readS2IImage(t, runtimeOut)
	if got := imageFile(t, img, "/app/app/app.txt"); got != s2iAppText {
		t.Errorf("/app/app/app.txt = %q, want the assembled app (s2i keeps the artifact's name inside DEST)", got)
	}
	cfg := configOf(t, img)
	if want := []string{"/usr/libexec/s2i-runtime/run"}; !reflect.DeepEqual(cfg.Config.Cmd, want) {
		t.Errorf("runtime image CMD = %q, want %q", cfg.Config.Cmd, want)
	}
	tree, err = flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/tmp/src", "/opt/app", "/usr/libexec/s2i"} {
		if _, ok := tree[p]; ok {
			t.Errorf("the runtime image holds %s of the builder", p)
		}
	}
	if cfg.Config.Labels["io.openshift.s2i.build.image"] != s2iBuilderImage || !hasEnv(cfg.Config.Env, "APP_MODE=prod") {
		t.Errorf("runtime image labels %v, env %v: want the build labels and environment", cfg.Config.Labels, cfg.Config.Env)
	}

	// 5. --as-dockerfile writes what `kiln build` builds into the same application image.
	dfDir := filepath.Join(userDir(t, u, "generated"), "app")
	dockerfile := filepath.Join(dfDir, "Dockerfile")
	if _, stderr, err := runKiln(t, u, "s2i", "build", "--root", store, src, s2iBuilderImage, "s2i-df:e2e", "--as-dockerfile", dockerfile); err != nil {
		t.Fatalf("kiln s2i build --as-dockerfile: %v\n%s", err, tail(stderr, 40))
	}
	text, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "FROM "+s2iBuilderImage+"\n") {
		t.Errorf("the generated Dockerfile does not start from the builder:\n%s", text)
	}
	if _, err := os.Stat(filepath.Join(dfDir, "upload", "src", "app.txt")); err != nil {
		t.Errorf("the build context next to the Dockerfile lacks the source: %v", err)
	}
	dfOut := filepath.Join(outDir, "from-dockerfile")
	if _, stderr, err := runKiln(t, u, "build", "-t", "s2i-df:e2e", "-o", "type=oci,dest="+dfOut, dfDir); err != nil {
		t.Fatalf("kiln build of the generated Dockerfile: %v\n%s", err, tail(stderr, 40))
	}
	checkS2IApp(t, readS2IImage(t, dfOut), src, "s2i-df:e2e")
}

// checkS2IApp checks an image built from testdata/s2i/source with the builder: the files
// assemble copied (but not the .s2iignore'd one), its command, environment, user and labels.
func checkS2IApp(t *testing.T, img v1.Image, src, tag string) {
	t.Helper()
	tree, err := flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/opt/app/app.txt", "/opt/app/lib/util.txt", "/opt/app/.s2i/environment", "/tmp/src/app.txt"} {
		if tree[p].Type != "reg" {
			t.Errorf("%s missing from the image (%v)", p, tree[p])
		}
	}
	for _, p := range []string{"/opt/app/ignored.txt", "/tmp/src/ignored.txt"} {
		if _, ok := tree[p]; ok {
			t.Errorf("%s is in the image: .s2iignore lists it", p)
		}
	}
	if fi := tree["/tmp/src/app.txt"]; fi.UID != 1001 {
		t.Errorf("/tmp/src/app.txt is owned by %d, want the assemble user 1001", fi.UID)
	}
	if got := imageFile(t, img, "/opt/app/app.txt"); got != s2iAppText {
		t.Errorf("/opt/app/app.txt = %q", got)
	}
	cfg := configOf(t, img)
	if want := []string{"/usr/libexec/s2i/run"}; !reflect.DeepEqual(cfg.Config.Cmd, want) {
		t.Errorf("CMD = %q, want the run script %q", cfg.Config.Cmd, want)
	}
	for _, kv := range []string{"APP_MODE=prod", "GREETING=hello world"} {
		if !hasEnv(cfg.Config.Env, kv) {
			t.Errorf("ENV %v lacks %s (from .s2i/environment)", cfg.Config.Env, kv)
		}
	}
	if cfg.Config.User != "1001" {
		t.Errorf("USER = %q, want the builder's 1001", cfg.Config.User)
	}
	for k, v := range map[string]string{
		"io.k8s.display-name":                    tag,
		"io.openshift.s2i.build.image":           s2iBuilderImage,
		"io.openshift.s2i.build.source-location": src,
		"io.openshift.s2i.scripts-url":           "image:///usr/libexec/s2i",
		"io.openshift.s2i.destination":           "/tmp",
	} {
		if got := cfg.Config.Labels[k]; got != v {
			t.Errorf("label %s = %q, want %q", k, got, v)
		}
	}
}

func readS2IImage(t *testing.T, layout string) v1.Image {
	t.Helper()
	img, err := readLayoutImage(layout, "")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func configOf(t *testing.T, img v1.Image) *v1.ConfigFile {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("reading the image config: %v", err)
	}
	return cfg
}

func hasEnv(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

// imageFile returns the content of the regular file p in img, as its last layer to touch p
// left it ("" when it is absent).
func imageFile(t *testing.T, img v1.Image, p string) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	content := ""
	dir, base := path.Split(p)
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("reading a layer: %v", err)
			}
			switch name := cleanPath(h.Name); {
			case name == p && h.Typeflag == tar.TypeReg:
				data, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				content = string(data)
			case name == path.Join(dir, ".wh."+base):
				content = ""
			}
		}
		rc.Close()
	}
	return content
}

// layerContains reports whether the uncompressed layer l holds s anywhere.
func layerContains(t *testing.T, l v1.Layer, s string) bool {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(data, []byte(s))
}

// registryDigest asks the test registry for the manifest digest of ref.
func registryDigest(t *testing.T, ref string) string {
	t.Helper()
	repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, registryAddr+"/"), ":")
	req, err := http.NewRequest(http.MethodHead, "http://"+registryAddr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("asking the registry for %s: %v", ref, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s: %s", req.URL, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest")
}
