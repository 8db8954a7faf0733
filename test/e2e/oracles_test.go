package e2e

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-build/kiln/test/podlike"
)

// buildahBuild builds contextDir (its Dockerfile unless args say -f) with
// buildah as u, in chroot isolation with --layers and a store private to this
// test, and returns the image: an OCI layout directory holding it under the
// tag "latest", or, when args hold `--format docker`, a docker-archive tar
// (pushing a docker-format image to an OCI layout would drop HEALTHCHECK,
// SHELL and ONBUILD from its config).
//
// args go to `buildah bud`, except `--storage-driver D` (default overlay, as
// podman recorded the corpus expectations with), which
// selects buildah's storage driver.
func buildahBuild(t *testing.T, u User, contextDir string, args ...string) string {
	t.Helper()
	needTool(t, "buildah")
	driver, args := takeFlag(args, "--storage-driver", "overlay")
	format, _ := takeFlag(args, "--format", "oci")
	base := userDir(t, u, "buildah-"+driver)
	global := []string{
		"--root", filepath.Join(base, "root"),
		"--runroot", filepath.Join(base, "runroot"),
		"--storage-driver", driver,
	}
	name := "localhost/kiln-e2e-oracle:latest"
	bud := append(append([]string{}, global...), "bud", "--isolation", "chroot",
		"--tls-verify=false", "--layers", "-t", name)
	if !hasFlag(args, "-f") && !hasFlag(args, "--file") {
		bud = append(bud, "-f", filepath.Join(contextDir, "Dockerfile"))
	}
	bud = append(append(bud, args...), contextDir)
	// Relative paths in args (-f, --secret src=) are relative to the case.
	mustRunIn(t, u, contextDir, "buildah", bud...)

	dest := filepath.Join(base, "oci")
	target := "oci:" + dest + ":latest"
	if format == "docker" {
		dest = filepath.Join(base, "image.tar")
		target = "docker-archive:" + dest + ":" + name
	}
	push := append(append([]string{}, global...), "push", name, target)
	mustRun(t, u, "buildah", push...)
	return dest
}

// takeFlag removes `flag V` or `flag=V` from args and returns V (or def).
func takeFlag(args []string, flag, def string) (string, []string) {
	val := def
	var rest []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == flag && i+1 < len(args):
			val = args[i+1]
			i++
		case strings.HasPrefix(args[i], flag+"="):
			val = strings.TrimPrefix(args[i], flag+"=")
		default:
			rest = append(rest, args[i])
		}
	}
	return val, rest
}

// mustRun runs name as u in / and fails t, with its output, when it fails.
func mustRun(t *testing.T, u User, name string, args ...string) string {
	t.Helper()
	return mustRunIn(t, u, "/", name, args...)
}

// mustRunIn is mustRun in working directory dir.
func mustRunIn(t *testing.T, u User, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	stdout, stderr, err := run(u.command(ctx, t, dir, nil, name, args...))
	if err != nil {
		t.Fatalf("%s %s as %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), u, err,
			tail(stdout, 30), tail(stderr, 60))
	}
	return stdout
}

// skopeoImage is what skopeo reports about an image.
type skopeoImage struct {
	Digest string
	Layers []string
	Config v1.ConfigFile
}

// skopeoInspect asks skopeo about an OCI layout directory, or an archive
// (oci-archive when the tar holds an oci-layout file, docker-archive otherwise).
func skopeoInspect(t *testing.T, layoutOrTar string) skopeoImage {
	t.Helper()
	needTool(t, "skopeo")
	ref, err := skopeoRef(layoutOrTar)
	if err != nil {
		t.Fatalf("skopeo inspect %s: %v", layoutOrTar, err)
	}
	var img skopeoImage
	raw := mustRun(t, Root, "skopeo", "inspect", ref)
	if err := json.Unmarshal([]byte(raw), &img); err != nil {
		t.Fatalf("decoding skopeo inspect %s: %v", ref, err)
	}
	cfg := mustRun(t, Root, "skopeo", "inspect", "--config", ref)
	if err := json.Unmarshal([]byte(cfg), &img.Config); err != nil {
		t.Fatalf("decoding skopeo inspect --config %s: %v", ref, err)
	}
	return img
}

func skopeoRef(p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		return "oci:" + p, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "docker-archive:" + p, nil
		}
		if err != nil {
			return "", fmt.Errorf("reading %s as tar: %w", p, err)
		}
		if strings.TrimPrefix(h.Name, "./") == "oci-layout" {
			return "oci-archive:" + p, nil
		}
	}
}

// umociUnpack unpacks the image tagged tag in layoutDir into a new runtime
// bundle and returns the bundle directory. With tag "" the layout must hold
// exactly one image; it is copied (by skopeo) to a tagged layout first, as
// is an archive given instead of a layout (see skopeoRef).
func umociUnpack(t *testing.T, layoutDir, tag string) string {
	t.Helper()
	needTool(t, "umoci")
	if fi, err := os.Stat(layoutDir); err == nil && !fi.IsDir() || tag == "" {
		src, err := skopeoRef(layoutDir)
		if err != nil {
			t.Fatalf("unpacking %s: %v", layoutDir, err)
		}
		if tag != "" && strings.HasPrefix(src, "oci") {
			src += ":" + tag
		}
		tagged := filepath.Join(userDir(t, Root, "tagged"), fmt.Sprintf("i%d", time.Now().UnixNano()))
		mustRun(t, Root, "skopeo", "copy", "-q", src, "oci:"+tagged+":run")
		layoutDir, tag = tagged, "run"
	}
	bundle := filepath.Join(userDir(t, Root, "bundles"), fmt.Sprintf("b%d", time.Now().UnixNano()))
	args := []string{"unpack", "--image", layoutDir + ":" + tag, bundle}
	if os.Geteuid() != 0 {
		args = append([]string{"unpack", "--rootless"}, args[1:]...)
	}
	mustRun(t, Root, "umoci", args...)
	return bundle
}

// runBundle runs the bundle's process (or args, when given) with runc as root,
// without a terminal, and returns its stdout.
func runBundle(t *testing.T, bundle string, args ...string) string {
	t.Helper()
	needRoot(t)
	needTool(t, "runc")
	cfgPath := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatalf("reading bundle config: %v", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("decoding %s: %v", cfgPath, err)
	}
	proc, _ := cfg["process"].(map[string]any)
	if proc == nil {
		t.Fatalf("%s has no process", cfgPath)
	}
	proc["terminal"] = false
	// Run as container engines do (and as the corpus expectations were
	// recorded with podman): their default capabilities, not runc's three,
	// and the user's primary group among its groups.
	caps := podlike.DefaultCapabilities()
	proc["capabilities"] = map[string]any{"bounding": caps, "effective": caps, "permitted": caps}
	if user, ok := proc["user"].(map[string]any); ok {
		if gids, _ := user["additionalGids"].([]any); len(gids) == 0 {
			user["additionalGids"] = []any{user["gid"]}
		}
	}
	if len(args) > 0 {
		proc["args"] = args
	}
	cfg["mounts"] = withoutVolumeMounts(cfg["mounts"])
	// umoci's default rlimits exceed this machine's hard limits.
	proc["rlimits"] = []map[string]any{{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}}
	if raw, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatalf("encoding %s: %v", cfgPath, err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatalf("writing %s: %v", cfgPath, err)
	}
	id := fmt.Sprintf("kiln-e2e-%d", time.Now().UnixNano())
	stateDir := userDir(t, Root, "runc-state")
	t.Cleanup(func() {
		_, _, _ = run(Root.command(context.Background(), t, "/", nil, "runc", "--root", stateDir, "delete", "--force", id))
	})
	return mustRun(t, Root, "runc", "--root", stateDir, "run", "--bundle", bundle, id)
}

// withoutVolumeMounts drops the empty mounts umoci adds for the image's
// VOLUMEs: Docker and podman copy the image's content into a new volume, so
// leaving the image's own directory visible is the faithful approximation.
func withoutVolumeMounts(mounts any) []any {
	system := map[string]bool{"/proc": true, "/dev": true, "/dev/pts": true, "/dev/shm": true,
		"/dev/mqueue": true, "/sys": true, "/sys/fs/cgroup": true}
	list, _ := mounts.([]any)
	var kept []any
	for _, m := range list {
		if mm, ok := m.(map[string]any); ok && system[fmt.Sprint(mm["destination"])] {
			kept = append(kept, m)
		}
	}
	return kept
}

// readLayoutImage opens the image tagged tag in layoutDir; with tag "" the
// layout must hold exactly one image. A docker-archive or oci-archive tar
// holding one image may stand for the layout; tag is then ignored.
func readLayoutImage(layoutDir, tag string) (v1.Image, error) {
	if fi, err := os.Stat(layoutDir); err == nil && !fi.IsDir() {
		return readArchiveImage(layoutDir)
	}
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		return nil, fmt.Errorf("opening OCI layout %s: %w", layoutDir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading index of %s: %w", layoutDir, err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if tag == "" || d.Annotations["org.opencontainers.image.ref.name"] == tag {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("layout %s: %d images match tag %q, want exactly 1", layoutDir, len(found), tag)
	}
	img, err := idx.Image(found[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("reading image %s from %s: %w", found[0].Digest, layoutDir, err)
	}
	return img, nil
}

// readArchiveImage opens the only image of a docker-archive or oci-archive tar.
func readArchiveImage(path string) (v1.Image, error) {
	ref, err := skopeoRef(path)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(ref, "docker-archive:") {
		img, err := tarball.ImageFromPath(path, nil)
		if err != nil {
			return nil, fmt.Errorf("reading docker archive %s: %w", path, err)
		}
		return img, nil
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), "oci-archive-")
	if err != nil {
		return nil, err
	}
	if err := extractTar(path, dir); err != nil {
		return nil, fmt.Errorf("unpacking oci archive %s: %w", path, err)
	}
	return readLayoutImage(dir, "")
}

// extractTar writes the regular files and directories of an OCI archive to dir.
func extractTar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(name, 0o755)
		case tar.TypeReg:
			err = writeFileFrom(name, tr)
		}
		if err != nil {
			return err
		}
	}
}

func writeFileFrom(name string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
