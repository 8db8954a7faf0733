package registry

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// staticKeychain hands out one authenticator for every registry.
type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

// anonymous is a keychain that never finds credentials, so tests do not
// depend on the docker config of the machine they run on.
var anonymous = staticKeychain{authn.Anonymous}

// startRegistry serves go-containerregistry's in-memory registry, with
// wrap (if not nil) around it, and returns its host:port.
func startRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// seed writes img to ref with go-containerregistry directly (the oracle).
func seed(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("seeding %s: %v", ref, err)
	}
}

func mustDigest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestImageByTagAndDigest(t *testing.T) {
	host := startRegistry(t, nil)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, host+"/app:v1", img)
	want := mustDigest(t, img)

	c := newTestClient(t, WithKeychain(anonymous))
	for _, ref := range []string{host + "/app:v1", host + "/app@" + want.String()} {
		t.Run(ref, func(t *testing.T) {
			got, err := c.Image(context.Background(), ref)
			if err != nil {
				t.Fatal(err)
			}
			if d := mustDigest(t, got); d != want {
				t.Fatalf("digest %s, want %s", d, want)
			}
			layers, err := got.Layers()
			if err != nil || len(layers) != 2 {
				t.Fatalf("layers: %d, %v", len(layers), err)
			}
			d, err := c.Digest(context.Background(), ref)
			if err != nil || d != want {
				t.Fatalf("Digest: %s, %v; want %s", d, err, want)
			}
		})
	}
}

// multiPlatformIndex returns an index of one random image per platform.
func multiPlatformIndex(t *testing.T, platforms ...v1.Platform) (v1.ImageIndex, map[string]v1.Hash) {
	t.Helper()
	idx := v1.ImageIndex(empty.Index)
	digests := map[string]v1.Hash{}
	for _, p := range platforms {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		p := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
		digests[platformString(p)] = mustDigest(t, img)
	}
	return idx, digests
}

func TestImagePlatformSelection(t *testing.T) {
	host := startRegistry(t, nil)
	idx, digests := multiPlatformIndex(t,
		v1.Platform{OS: "linux", Architecture: "amd64"},
		v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"},
		v1.Platform{OS: "unknown", Architecture: "unknown"},
	)
	ref, err := name.ParseReference(host + "/multi:latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		platform v1.Platform
		want     string // key into digests; "" means no match
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "linux/amd64"},
		{v1.Platform{OS: "linux", Architecture: "arm64"}, "linux/arm64/v8"},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "linux/arm64/v8"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linux/arm/v7"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, ""},
		{v1.Platform{OS: "linux", Architecture: "s390x"}, ""},
	}
	for _, tt := range tests {
		t.Run(platformString(tt.platform), func(t *testing.T) {
			c := newTestClient(t, WithKeychain(anonymous), WithPlatform(tt.platform))
			img, err := c.Image(context.Background(), ref.String())
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), "linux/arm/v7") || !strings.Contains(err.Error(), ref.String()) {
					t.Fatalf("want an error naming the reference and the index's platforms, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := mustDigest(t, img); d != digests[tt.want] {
				t.Fatalf("got %s, want the %s image %s", d, tt.want, digests[tt.want])
			}
		})
	}
	d, err := newTestClient(t, WithKeychain(anonymous)).Digest(context.Background(), ref.String())
	if err != nil || d != mustDigest(t, idx) {
		t.Fatalf("Digest of an index: %s, %v; want %s", d, err, mustDigest(t, idx))
	}
}

// countUploads counts blob upload sessions started on the wrapped registry.
func countUploads(n *atomic.Int32) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/blobs/uploads") {
				n.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestPushTwoRefsSkipsExistingBlobs(t *testing.T) {
	var uploads atomic.Int32
	host := startRegistry(t, countUploads(&uploads))
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, WithKeychain(anonymous))
	refs := []string{host + "/a/app:v1", host + "/b/other:latest"}
	if err := c.Push(context.Background(), img, refs...); err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		r, _ := name.ParseReference(ref)
		desc, err := remote.Get(r)
		if err != nil {
			t.Fatalf("oracle reading %s: %v", ref, err)
		}
		if desc.Digest != mustDigest(t, img) {
			t.Fatalf("%s: digest %s, want %s", ref, desc.Digest, mustDigest(t, img))
		}
	}
	before := uploads.Load()
	if err := c.Push(context.Background(), img, host+"/a/app:v2"); err != nil {
		t.Fatal(err)
	}
	if n := uploads.Load() - before; n != 0 {
		t.Fatalf("pushing an image the repository already holds started %d blob uploads", n)
	}
}

// requireBasicAuth answers 401 unless the request carries user:pass.
func requireBasicAuth(user, pass string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestErrors(t *testing.T) {
	host := startRegistry(t, requireBasicAuth("kiln", "secret"))
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	good := newTestClient(t, WithKeychain(staticKeychain{&authn.Basic{Username: "kiln", Password: "secret"}}))
	if err := good.Push(context.Background(), img, host+"/app:v1"); err != nil {
		t.Fatalf("push with credentials: %v", err)
	}
	tests := []struct {
		name   string
		client *Client
		ref    string
		want   []string
	}{
		{"missing tag", good, host + "/app:nope", []string{host + "/app:nope", "MANIFEST_UNKNOWN"}},
		{"missing repository", good, host + "/nothing:v1", []string{host + "/nothing:v1", "NAME_UNKNOWN"}},
		{"no credentials", newTestClient(t, WithKeychain(anonymous)), host + "/app:v1", []string{host + "/app:v1", "UNAUTHORIZED"}},
		{"wrong credentials", newTestClient(t, WithKeychain(staticKeychain{&authn.Basic{Username: "kiln", Password: "wrong"}})),
			host + "/app:v1", []string{host + "/app:v1", "UNAUTHORIZED", "authentication required"}},
		{"bad reference", good, "UPPER/case:x", []string{`"UPPER/case:x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.Image(context.Background(), tt.ref)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if err := newTestClient(t, WithKeychain(anonymous)).Push(context.Background(), img, host+"/app:v2"); err == nil ||
		!strings.Contains(err.Error(), "401 Unauthorized") || !strings.Contains(err.Error(), host+"/app:v2") {
		t.Fatalf("push without credentials: %v", err)
	}
}

// failFirst breaks the first n manifest requests with fault: an HTTP
// status code, or 0 to reset the connection.
func failFirst(n int32, fault int) func(http.Handler) http.Handler {
	var seen atomic.Int32
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/manifests/") || seen.Add(1) > n {
				h.ServeHTTP(w, r)
				return
			}
			if fault != 0 {
				http.Error(w, "try later", fault)
				return
			}
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // close with RST
			}
			conn.Close()
		})
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		fault   int
		retries int
		ok      bool
	}{
		{http.StatusServiceUnavailable, 0, false},
		{http.StatusServiceUnavailable, 1, false},
		{http.StatusServiceUnavailable, 2, true},
		{http.StatusTooManyRequests, 0, false},
		{http.StatusTooManyRequests, 2, true},
		{http.StatusInternalServerError, 2, true},
		{0, 0, false},
		{0, 2, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("fault %d retries %d", tt.fault, tt.retries), func(t *testing.T) {
			host := startRegistry(t, nil)
			img, err := random.Image(64, 1)
			if err != nil {
				t.Fatal(err)
			}
			seed(t, host+"/app:v1", img)
			flaky := startRegistry(t, func(http.Handler) http.Handler {
				return failFirst(2, tt.fault)(proxyTo(host))
			})
			c := newTestClient(t, WithKeychain(anonymous), WithRetries(tt.retries), WithRetryDelay(time.Millisecond))
			_, err = c.Image(context.Background(), flaky+"/app:v1")
			if tt.ok != (err == nil) {
				t.Fatalf("with %d retries after 2 failures: err = %v", tt.retries, err)
			}
			if err != nil && !strings.Contains(err.Error(), flaky+"/app:v1") {
				t.Fatalf("error does not name the reference: %v", err)
			}
		})
	}
}

// proxyTo forwards every request to the registry at host.
func proxyTo(host string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = "http", host
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
}

func TestInsecureTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are the point here
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "https://")
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := newTestClient(t, WithKeychain(anonymous)).Push(context.Background(), img, host+"/app:v1"); err == nil {
		t.Fatal("push to a registry with an unknown certificate succeeded without WithInsecure")
	}
	c := newTestClient(t, WithKeychain(anonymous), WithInsecure(host))
	if err := c.Push(context.Background(), img, host+"/app:v1"); err != nil {
		t.Fatalf("push with WithInsecure: %v", err)
	}
	got, err := c.Image(context.Background(), host+"/app:v1")
	if err != nil || mustDigest(t, got) != mustDigest(t, img) {
		t.Fatalf("pull with WithInsecure: %v", err)
	}
}

func TestUserAgent(t *testing.T) {
	var agents atomic.Value
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			agents.Store(r.UserAgent())
			h.ServeHTTP(w, r)
		})
	})
	img, _ := random.Image(64, 1)
	if err := newTestClient(t, WithKeychain(anonymous), WithUserAgent("kiln/test")).Push(context.Background(), img, host+"/ua:v1"); err != nil {
		t.Fatal(err)
	}
	if ua, _ := agents.Load().(string); !strings.HasPrefix(ua, "kiln/test") {
		t.Fatalf("User-Agent %q", ua)
	}
}

// TestDigestWithoutHead covers registries that refuse HEAD on manifests.
func TestDigestWithoutHead(t *testing.T) {
	backend := startRegistry(t, nil)
	img, _ := random.Image(64, 1)
	seed(t, backend+"/app:v1", img)
	host := startRegistry(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			proxyTo(backend).ServeHTTP(w, r)
		})
	})
	d, err := newTestClient(t, WithKeychain(anonymous)).Digest(context.Background(), host+"/app:v1")
	if err != nil || d != mustDigest(t, img) {
		t.Fatalf("Digest = %s, %v; want %s", d, err, mustDigest(t, img))
	}
}

// newTestClient is New for tests: a configuration error fails the test.
func newTestClient(t testing.TB, opts ...Option) *Client {
	t.Helper()
	c, err := New(opts...)
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	return c
}

// TestMissingLayerBlob: a registry that has an image's manifest but not one of its layers
// fails the layer's download with the layer, the repository and the registry's error code.
func TestMissingLayerBlob(t *testing.T) {
	var missing atomic.Value // the path of the blob the registry pretends not to have
	missing.Store("")
	host := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == missing.Load().(string) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, host+"/app:v1", img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	digest := mustDigest(t, layers[0])
	missing.Store("/v2/app/blobs/" + digest.String())

	pulled, err := newTestClient(t, WithKeychain(anonymous)).Image(context.Background(), host+"/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	pulledLayers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := pulledLayers[0].Compressed()
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if err == nil {
		t.Fatal("no error")
	}
	t.Log(err)
	for _, w := range []string{digest.String(), host + "/app", "BLOB_UNKNOWN", "does not hold this layer"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}
