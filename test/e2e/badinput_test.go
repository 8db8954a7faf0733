package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// hostileEntry is one entry of a hand-made layer tar.
type hostileEntry struct {
	name, linkname string
	typ            byte
	body           string
}

// pushHostileImage pushes a one-or-more-layer image made of raw tar entries, as an attacker
// controlling a base image could, and returns its reference.
func pushHostileImage(t *testing.T, tag string, layers ...[]hostileEntry) string {
	t.Helper()
	img := empty.Image
	for _, entries := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			h := &tar.Header{Name: e.name, Linkname: e.linkname, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
			if e.typ == tar.TypeDir {
				h.Mode = 0o755
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		data := buf.Bytes()
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	img, err := mutate.Config(img, v1.Config{Cmd: []string{"/x"}})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(registryAddr+"/e2e/hostile:"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref.String()
}

// canary is a directory outside every build directory that a hostile input aims at; the
// test fails if anything appears in it.
func canary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kiln-canary-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		if len(entries) != 0 {
			t.Errorf("a hostile input wrote outside the build's directories: %s holds %d entries", dir, len(entries))
		}
		os.RemoveAll(dir)
	})
	return dir
}

// buildDockerfile builds a Dockerfile with nothing else in its context, as u.
func buildDockerfile(t *testing.T, u User, dockerfile string, args ...string) (string, error) {
	t.Helper()
	dir := userDir(t, u, "ctx")
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runKiln(t, u, append(append([]string{"build"}, args...), dir)...)
	return stderr, err
}

// oneLineError checks a failed build printed its cause in one error line containing want.
func oneLineError(t *testing.T, stderr string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the build succeeded; want an error containing %q", want)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Errorf("exit status: %v, want non-zero", err)
	}
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "kiln: error: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("want one 'kiln: error:' line containing %q, got %q", want, lines)
	}
}

// TestBadInputHostileLayers pulls base images whose layers try to write outside the layer
// directory: every attempt fails with an error or stays inside, as every user.
func TestBadInputHostileLayers(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			c := canary(t)
			rel := "../../../../../../../.." + c
			dotdot := pushHostileImage(t, "dotdot-"+string(u), []hostileEntry{{name: rel + "/pwned", typ: tar.TypeReg, body: "x"}})
			stderr, err := buildDockerfile(t, u, "FROM "+dotdot+"\nCMD [\"/x\"]\n")
			oneLineError(t, stderr, err, "climbs out of the layer")

			// An absolute symlink in one layer, then a file written through it in the next.
			through := pushHostileImage(t, "symlink-"+string(u),
				[]hostileEntry{{name: "evil", linkname: c, typ: tar.TypeSymlink}},
				[]hostileEntry{{name: "evil/pwned", typ: tar.TypeReg, body: "x"}})
			if stderr, err := buildDockerfile(t, u, "FROM "+through+"\nCMD [\"/x\"]\n"); err != nil {
				t.Logf("symlink-through layer refused: %s", tail(stderr, 3))
			}
			// A hard link to a host file, and a device node.
			link := pushHostileImage(t, "hardlink-"+string(u), []hostileEntry{
				{name: "passwd", linkname: "/etc/passwd", typ: tar.TypeLink},
			})
			stderr, err = buildDockerfile(t, u, "FROM "+link+"\nCMD [\"/x\"]\n")
			oneLineError(t, stderr, err, "passwd")
		})
	}
}

// TestBadInputRegistryAndStore covers an unreachable registry, an unknown image and a store
// that fills up, as every user.
func TestBadInputRegistryAndStore(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			stderr, err := buildDockerfile(t, u, "FROM 127.0.0.1:9/nothing/here:1\n")
			oneLineError(t, stderr, err, "127.0.0.1:9")
			stderr, err = buildDockerfile(t, u, "FROM "+registryAddr+"/e2e/never-pushed:1\n")
			oneLineError(t, stderr, err, "never-pushed")
			stderr, err = buildDockerfile(t, u, "FROM --platform=linux/s390x "+registryAddr+"/busybox:latest\n")
			oneLineError(t, stderr, err, "--platform=linux/s390x")

			// A store on a 6 MiB tmpfs: the base image fits, a RUN writing 8 MiB does not.
			small := userDir(t, u, "small")
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m,mode=0777", "tmpfs", small).CombinedOutput(); err != nil {
				t.Fatalf("mounting a small tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", "-l", small).Run() })
			stderr, err = buildDockerfile(t, u, "FROM "+registryAddr+"/busybox:latest\nRUN dd if=/dev/zero of=/big bs=1M count=8\n",
				"--root", filepath.Join(small, "store"))
			oneLineError(t, stderr, err, "exit code 1")
			if !strings.Contains(stderr, "No space left on device") {
				t.Errorf("the RUN's own message is not shown:\n%s", tail(stderr, 10))
			}
			if entries, _ := os.ReadDir(filepath.Join(small, "store", "tmp")); len(entries) != 0 {
				t.Errorf("the failed build left %d entries in the store's tmp", len(entries))
			}
		})
	}
}
