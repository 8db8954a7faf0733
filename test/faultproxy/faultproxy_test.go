package faultproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// upstream starts an in-memory registry behind httptest, serving TLS when cfg is not
// nil. Like the distribution registry, it answers with absolute Location URLs built
// from the request's Host, keeps blobs per repository and mounts them from one
// repository into another, which go-containerregistry's registry does not.
func upstream(t *testing.T, cfg *tls.Config) *url.URL {
	t.Helper()
	blobs := &repoBlobs{m: map[string][]byte{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(blobs))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		q := r.URL.Query()
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/") && q.Get("mount") != "" {
			repo := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/uploads/")
			if blobs.mount(q.Get("from"), repo, q.Get("mount")) {
				w.Header().Set("Location", scheme+"://"+r.Host+"/v2/"+repo+"/blobs/"+q.Get("mount"))
				w.Header().Set("Docker-Content-Digest", q.Get("mount"))
				w.WriteHeader(http.StatusCreated)
				return
			}
		}
		reg.ServeHTTP(absoluteLocation{w, scheme + "://" + r.Host}, r)
	})
	srv := httptest.NewUnstartedServer(h)
	if cfg != nil {
		srv.TLS = cfg
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatalf("parsing the registry's URL: %v", err)
	}
	return u
}

// repoBlobs is a registry's blob store that keeps blobs per repository.
type repoBlobs struct {
	mu sync.Mutex
	m  map[string][]byte // by repo@digest
}

// key is where a blob is kept. The registry names the repository of an upload's last
// PUT with "/blobs" appended.
func key(repo string, h v1.Hash) string {
	return strings.TrimSuffix(repo, "/blobs") + "@" + h.String()
}

func (b *repoBlobs) Get(_ context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	blob, ok := b.m[key(repo, h)]
	if !ok {
		return nil, registry.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(blob)), nil
}

func (b *repoBlobs) Stat(_ context.Context, repo string, h v1.Hash) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	blob, ok := b.m[key(repo, h)]
	if !ok {
		return 0, registry.ErrNotFound
	}
	return int64(len(blob)), nil
}

func (b *repoBlobs) Put(_ context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	blob, err := io.ReadAll(rc) // verifies size and digest
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[key(repo, h)] = blob
	return nil
}

// mount copies a blob from one repository to another, if the first has it.
func (b *repoBlobs) mount(from, to, digest string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	blob, ok := b.m[from+"@"+digest]
	if ok {
		b.m[to+"@"+digest] = blob
	}
	return ok
}

// absoluteLocation makes relative Location headers absolute.
type absoluteLocation struct {
	http.ResponseWriter
	base string
}

func (a absoluteLocation) WriteHeader(code int) {
	if l := a.Header().Get("Location"); strings.HasPrefix(l, "/") {
		a.Header().Set("Location", a.base+l)
	}
	a.ResponseWriter.WriteHeader(code)
}

// client is a raw HTTP client that opens a connection per request (so that no request
// is retried on a reused connection) and does not follow redirects.
func client(t *testing.T, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true, ResponseHeaderTimeout: 10 * time.Second}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Timeout:       10 * time.Second, // no test waits that long
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends a request and fails the test if it gets no answer.
func do(t *testing.T, c *http.Client, method, u string, body io.Reader) *http.Response {
	t.Helper()
	resp, err := try(c, method, u, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	return resp
}

// try sends a request.
func try(c *http.Client, method, u string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// statusOf sends a request and returns the status, reading and closing the body.
func statusOf(t *testing.T, c *http.Client, method, u string) int {
	t.Helper()
	resp := do(t, c, method, u, nil)
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return resp.StatusCode
}

// blob makes n random bytes and their digest.
func blob(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("making a random blob: %v", err)
	}
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

// putBlob uploads a blob in a POST and a PUT, and returns the PUT's status.
func putBlob(t *testing.T, c *http.Client, base, repo string, b []byte, digest string) int {
	t.Helper()
	resp := do(t, c, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload: status %d", resp.StatusCode)
	}
	resp = do(t, c, http.MethodPut, resp.Header.Get("Location")+"?digest="+digest, bytes.NewReader(b))
	resp.Body.Close()
	return resp.StatusCode
}

// remoteOpts are go-containerregistry options with a fresh transport.
func remoteOpts(t *testing.T, roots *x509.CertPool) []remote.Option {
	tr := &http.Transport{}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return []remote.Option{
		remote.WithTransport(tr),
		remote.WithRetryBackoff(remote.Backoff{Duration: 10 * time.Millisecond, Factor: 1, Steps: 3}),
	}
}

// ref parses an image reference.
func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatalf("parsing %s: %v", s, err)
	}
	return r
}

// pushPull pushes a random image through the proxy, pulls it back through it and checks
// every byte. It returns the image.
func pushPull(t *testing.T, p *Proxy, repo string, opts []remote.Option) v1.Image {
	t.Helper()
	img, err := random.Image(48*1024, 3)
	if err != nil {
		t.Fatalf("making a random image: %v", err)
	}
	r := ref(t, p.Host()+"/"+repo+":latest")
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("pushing through the proxy: %v", err)
	}
	got, err := remote.Image(r, opts...)
	if err != nil {
		t.Fatalf("pulling through the proxy: %v", err)
	}
	want, _ := img.Digest()
	if d, err := got.Digest(); err != nil || d != want {
		t.Fatalf("pulled digest %v (%v), pushed %v", d, err, want)
	}
	layers, err := got.Layers()
	if err != nil || len(layers) != 3 {
		t.Fatalf("pulled layers: %d, %v", len(layers), err)
	}
	for _, l := range layers {
		rc, err := l.Compressed() // verifies the digest as it is read
		if err != nil {
			t.Fatalf("pulling a layer: %v", err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("reading a layer: %v", err)
		}
		rc.Close()
	}
	if _, err := got.RawConfigFile(); err != nil {
		t.Fatalf("pulling the config: %v", err)
	}
	return img
}

// wantLog checks the log entry i once the proxy is done with it.
func wantLog(t *testing.T, p *Proxy, i int, want Request) Request {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs := p.Requests()
		if i < len(reqs) && reqs[i].Done {
			got := reqs[i]
			if got.Method != want.Method || got.Status != want.Status || got.Upstream != want.Upstream || got.Fault != want.Fault {
				t.Fatalf("request %d logged as %+v, want method %s status %d upstream %d fault %q",
					i, got, want.Method, want.Status, want.Upstream, want.Fault)
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %d not done in time; log: %+v", i, reqs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
