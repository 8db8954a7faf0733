package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/kiln-build/kiln/test/registrytest"
)

// distribution is a running CNCF distribution registry (Debian's
// docker-registry) with TLS from a test CA and htpasswd auth.
type distribution struct {
	host       string // 127.0.0.1:port
	user, pass string
	caFile     string // PEM of the CA that signed the registry's certificate
}

// startDistribution starts docker-registry on a free loopback port, with
// TLS and one htpasswd user, and waits until it answers.
func startDistribution(t *testing.T) *distribution {
	t.Helper()
	const user, pass = "kiln", "s3cret"
	r := registrytest.Start(t, registrytest.Options{TLS: true, Users: map[string]string{user: pass}})
	return &distribution{host: r.Host, user: user, pass: pass, caFile: r.CAFile}
}

// skopeo runs skopeo against d with d's credentials and returns its stdout.
func (d *distribution) skopeo(t *testing.T, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("skopeo (the oracle) is missing; remedy: apt-get install -y skopeo")
	}
	var stderr bytes.Buffer
	cmd := exec.Command("skopeo", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func (d *distribution) client(opts ...Option) *Client {
	base := []Option{WithInsecure(d.host), WithKeychain(staticKeychain{&authn.Basic{Username: d.user, Password: d.pass}})}
	c, err := New(append(base, opts...)...)
	if err != nil {
		panic(err)
	}
	return c
}

func TestDistribution(t *testing.T) {
	d := startDistribution(t)
	ctx := context.Background()
	creds := "--creds=" + d.user + ":" + d.pass

	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, img)
	refs := []string{d.host + "/kiln/app:v1", d.host + "/kiln/other:latest"}

	t.Run("push to two refs", func(t *testing.T) {
		if err := d.client().Push(ctx, img, refs...); err != nil {
			t.Fatal(err)
		}
		for _, ref := range refs {
			var info struct{ Digest string }
			out := d.skopeo(t, "inspect", "--tls-verify=false", creds, "docker://"+ref)
			if err := json.Unmarshal(out, &info); err != nil {
				t.Fatal(err)
			}
			if info.Digest != want.String() {
				t.Fatalf("skopeo sees %s at %s, want %s", info.Digest, ref, want)
			}
		}
	})
	t.Run("pull by tag and digest", func(t *testing.T) {
		for _, ref := range []string{refs[0], d.host + "/kiln/app@" + want.String()} {
			got, err := d.client().Image(ctx, ref)
			if err != nil {
				t.Fatalf("%s: %v", ref, err)
			}
			if mustDigest(t, got) != want {
				t.Fatalf("%s: digest %s, want %s", ref, mustDigest(t, got), want)
			}
			if _, err := got.ConfigFile(); err != nil {
				t.Fatalf("%s: reading config: %v", ref, err)
			}
			if dg, err := d.client().Digest(ctx, ref); err != nil || dg != want {
				t.Fatalf("Digest(%s) = %s, %v", ref, dg, err)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		_, err := d.client().Image(ctx, d.host+"/kiln/app:missing")
		if err == nil || !strings.Contains(err.Error(), d.host+"/kiln/app:missing") || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
			t.Errorf("missing tag: %v", err)
		}
		_, err = d.client(WithKeychain(anonymous)).Image(ctx, refs[0])
		if err == nil || !strings.Contains(err.Error(), refs[0]) || !strings.Contains(err.Error(), "UNAUTHORIZED") {
			t.Errorf("no credentials: %v", err)
		}
		_, err = newTestClient(t, WithKeychain(anonymous)).Image(ctx, refs[0])
		if err == nil || !strings.Contains(err.Error(), refs[0]) {
			t.Errorf("TLS with an unknown CA and no WithInsecure: %v", err)
		}
	})
	t.Run("verified TLS with the test CA trusted", func(t *testing.T) {
		testVerifiedTLS(t, d, refs[0], want)
	})
	t.Run("multi-platform index pushed by skopeo", func(t *testing.T) {
		testDistributionIndex(t, d, creds)
	})
}

// testDistributionIndex pushes a three-platform index with skopeo and
// checks that each platform resolves to the child skopeo reports.
func testDistributionIndex(t *testing.T, d *distribution, creds string) {
	ctx := context.Background()
	idx, _ := multiPlatformIndex(t,
		v1.Platform{OS: "linux", Architecture: "amd64"},
		v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		v1.Platform{OS: "linux", Architecture: "ppc64le"},
	)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "multi"})); err != nil {
		t.Fatal(err)
	}
	ref := d.host + "/kiln/multi:latest"
	d.skopeo(t, "copy", "--all", "--dest-tls-verify=false", "--dest-"+strings.TrimPrefix(creds, "--"), "oci:"+dir+":multi", "docker://"+ref)

	var raw v1.IndexManifest
	if err := json.Unmarshal(d.skopeo(t, "inspect", "--raw", "--tls-verify=false", creds, "docker://"+ref), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Manifests) != 3 {
		t.Fatalf("skopeo pushed %d manifests, want 3", len(raw.Manifests))
	}
	for _, m := range raw.Manifests {
		c := d.client(WithPlatform(*m.Platform))
		img, err := c.Image(ctx, ref)
		if err != nil {
			t.Fatalf("%s: %v", platformString(*m.Platform), err)
		}
		if got := mustDigest(t, img); got != m.Digest {
			t.Errorf("%s: got %s, skopeo says %s", platformString(*m.Platform), got, m.Digest)
		}
	}
}

// verifiedEnv passes the registry and reference to TestVerifiedTLSChild.
const verifiedEnv = "KILN_REGISTRY_TEST_VERIFIED"

// testVerifiedTLS re-runs the test binary with SSL_CERT_FILE naming the test
// CA (Go reads the system roots once per process, so this takes a new
// process), where a client without WithInsecure must pull ref over
// verified TLS.
func testVerifiedTLS(t *testing.T, d *distribution, ref string, want v1.Hash) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestVerifiedTLSChild$", "-test.v")
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+d.caFile, "SSL_CERT_DIR=/nonexistent",
		verifiedEnv+"="+strings.Join([]string{ref, want.String(), d.user, d.pass}, " "))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestVerifiedTLSChild") {
		t.Fatalf("verified TLS pull: %v\n%s", err, out)
	}
}

// TestVerifiedTLSChild is the process started by testVerifiedTLS.
func TestVerifiedTLSChild(t *testing.T) {
	args := strings.Fields(os.Getenv(verifiedEnv))
	if len(args) != 4 {
		t.Skip("only run by TestDistribution, in a process that trusts the test CA")
	}
	ref, want, user, pass := args[0], args[1], args[2], args[3]
	c := newTestClient(t, WithKeychain(staticKeychain{&authn.Basic{Username: user, Password: pass}}))
	img, err := c.Image(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustDigest(t, img); got.String() != want {
		t.Fatalf("digest %s, want %s", got, want)
	}
}
