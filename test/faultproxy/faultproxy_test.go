package faultproxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
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

func TestTransparentPushPull(t *testing.T) {
	up := upstream(t, nil)
	p := New(t, up, Options{})
	img := pushPull(t, p, "test/transparent", remoteOpts(t, nil))

	// Every upload went through the proxy although the registry answered with
	// absolute Locations of its own: each blob was uploaded once, through the proxy.
	uploads := p.BlobUploads()
	layers, _ := img.Layers()
	cfg, _ := img.ConfigName()
	if len(uploads) != 4 || uploads[cfg.String()] != 1 {
		t.Errorf("uploads %v, want the config %v and 3 layers once each", uploads, cfg)
	}
	for _, l := range layers {
		if d, _ := l.Digest(); uploads[d.String()] != 1 {
			t.Errorf("layer %v uploaded %d times through the proxy, want 1", d, uploads[d.String()])
		}
	}
	if n := p.Count("PUT", `/manifests/`); n != 1 {
		t.Errorf("%d manifest PUTs, want 1", n)
	}
	for _, r := range p.Requests() {
		if r.Fault != "" || r.Status == 0 || r.Status != r.Upstream || r.Err != "" {
			t.Errorf("request logged as %+v, want it answered as the upstream did", r)
		}
	}

	// Location of an upload session points at the proxy; Range is honoured.
	c := client(t, nil)
	resp := do(t, c, http.MethodPost, p.URL().String()+"/v2/test/raw/blobs/uploads/", nil)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Host != p.Host() || loc.Scheme != "http" {
		t.Errorf("upload Location %q, want one on %s", resp.Header.Get("Location"), p.Host())
	}
	b, digest := blob(t, 10000)
	if s := putBlob(t, c, p.URL().String(), "test/raw", b, digest); s != http.StatusCreated {
		t.Fatalf("uploading a blob: status %d", s)
	}
	req, _ := http.NewRequest(http.MethodGet, p.URL().String()+"/v2/test/raw/blobs/"+digest, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatalf("ranged GET: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, b[100:200]) {
		t.Errorf("ranged GET: status %d, %d bytes, %v; want 206 and bytes 100-199", resp.StatusCode, len(got), err)
	}
	if p.BlobUploads()[digest] != 1 {
		t.Errorf("raw upload not counted: %v", p.BlobUploads())
	}
}

func TestHeadersPassThrough(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="https://auth.example/token",service="reg"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo-Host", r.Host)
		w.Header().Set("X-Echo-Body", string(body))
		w.Header().Set("X-Echo-Hop", r.Header.Get("X-Hop"))
		w.Header().Set("Location", "http://"+r.Host+"/v2/elsewhere?x=1")
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		w.Header()["Content-Type"] = nil // none: the proxy must not add one either
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("<html>"))
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p := New(t, u, Options{LogRequests: true})
	c := client(t, nil)

	resp := do(t, c, http.MethodGet, p.URL().String()+"/v2/", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "auth.example") {
		t.Errorf("unauthenticated: status %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	req, _ := http.NewRequest(http.MethodPatch, p.URL().String()+"/v2/x", strings.NewReader("payload"))
	req.Header.Set("Authorization", "Bearer token")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "should not pass")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("PATCH: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := resp.Header
	switch {
	case resp.StatusCode != http.StatusAccepted || string(body) != "<html>":
		t.Errorf("status %d, body %q", resp.StatusCode, body)
	case h.Get("X-Echo-Body") != "payload" || h.Get("X-Echo-Host") != u.Host || h.Get("X-Echo-Hop") != "":
		t.Errorf("upstream saw body %q, Host %q, X-Hop %q", h.Get("X-Echo-Body"), h.Get("X-Echo-Host"), h.Get("X-Echo-Hop"))
	case h.Get("Location") != p.URL().String()+"/v2/elsewhere?x=1":
		t.Errorf("Location %q not pointed at the proxy", h.Get("Location"))
	case h.Get("X-Private") != "" || h.Get("Content-Type") != "":
		t.Errorf("X-Private %q, Content-Type %q: want neither", h.Get("X-Private"), h.Get("Content-Type"))
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	u := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	ln.Close()
	p := New(t, u, Options{})
	resp := do(t, client(t, nil), http.MethodGet, p.URL().String()+"/v2/", nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "forwarding to upstream") {
		t.Errorf("status %d, body %s; want 502 saying what failed", resp.StatusCode, body)
	}
	if e := wantLog(t, p, 0, Request{Method: "GET", Status: 502}); e.Err == "" {
		t.Errorf("no error logged for an unreachable upstream")
	}
}

func TestStatusFault(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	p.Add(Rule{Method: "GET", Path: `^/v2/$`, Times: 1, Kind: Status, Status: 503, RetryAfter: 1500 * time.Millisecond})
	p.Add(Rule{Method: "HEAD", Path: `/manifests/`, Times: 1, Kind: Status, Status: 429, Name: "slow down"})

	resp := do(t, c, http.MethodGet, p.URL().String()+"/v2/", nil)
	var body struct {
		Errors []struct{ Code, Message string }
	}
	err := json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || err != nil ||
		len(body.Errors) != 1 || body.Errors[0].Code != "UNAVAILABLE" {
		t.Errorf("got status %d, Retry-After %q, body %+v (%v); want 503, 2, UNAVAILABLE",
			resp.StatusCode, resp.Header.Get("Retry-After"), body, err)
	}
	if s := statusOf(t, c, http.MethodGet, p.URL().String()+"/v2/"); s != 200 {
		t.Errorf("second GET: status %d, want 200", s)
	}
	resp = do(t, c, http.MethodHead, p.URL().String()+"/v2/x/manifests/latest", nil)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "" {
		t.Errorf("HEAD: status %d, Retry-After %q; want 429 and none", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	wantLog(t, p, 0, Request{Method: "GET", Status: 503, Fault: "status"})
	wantLog(t, p, 1, Request{Method: "GET", Status: 200, Upstream: 200})
	wantLog(t, p, 2, Request{Method: "HEAD", Status: 429, Fault: "slow down"})
	if p.CountFault("slow down") != 1 || p.CountFault("status") != 1 {
		t.Errorf("fault counts %d, %d; want 1, 1", p.CountFault("slow down"), p.CountFault("status"))
	}
}

func TestReset(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	p.Add(Rule{Path: `^/v2/$`, Kind: Reset, Times: 2})

	conn, err := net.Dial("tcp", p.Host())
	if err != nil {
		t.Fatalf("dialing the proxy: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("writing a request: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 100))
	if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read %d bytes, %v; want a connection reset", n, err)
	}

	if _, err := try(client(t, nil), http.MethodGet, p.URL().String()+"/v2/", nil); err == nil {
		t.Errorf("GET through a reset: no error")
	}
	if s := statusOf(t, client(t, nil), http.MethodGet, p.URL().String()+"/v2/"); s != 200 {
		t.Errorf("third GET: status %d, want 200", s)
	}
	wantLog(t, p, 0, Request{Method: "GET", Fault: "reset"})
	wantLog(t, p, 1, Request{Method: "GET", Fault: "reset"})
	wantLog(t, p, 2, Request{Method: "GET", Status: 200, Upstream: 200})
}

func TestDropResponseBody(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	base := p.URL().String()
	b, digest := blob(t, 100*1024)
	if s := putBlob(t, c, base, "test/drop", b, digest); s != http.StatusCreated {
		t.Fatalf("uploading a blob: status %d", s)
	}
	p.ClearRequests()
	blobURL := base + "/v2/test/drop/blobs/" + digest

	// Cut after 1000 bytes, then past the end of the body, then before the headers.
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: DropResponseBody, Bytes: 1000})
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, After: 1, Times: 1, Kind: DropResponseBody, Bytes: 1 << 30, Name: "past end"})
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, After: 2, Times: 1, Kind: DropResponseBody, Bytes: -1, Name: "no headers"})
	for i, want := range []int{1000, len(b) - 1} {
		resp := do(t, c, http.MethodGet, blobURL, nil)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(b)) || len(got) != want ||
			!errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, b[:want]) {
			t.Errorf("GET %d: status %d, length %d, got %d bytes, %v; want 200, %d, %d bytes and an unexpected EOF",
				i, resp.StatusCode, resp.ContentLength, len(got), err, len(b), want)
		}
	}
	if _, err := try(c, http.MethodGet, blobURL, nil); err == nil {
		t.Errorf("GET cut before the headers: no error")
	}
	resp := do(t, c, http.MethodGet, blobURL, nil)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("fourth GET: %d bytes, %v; want the whole blob", len(got), err)
	}
	if e := wantLog(t, p, 0, Request{Method: "GET", Upstream: 200, Fault: "drop-response-body"}); e.Sent != 1000 {
		t.Errorf("first GET logged %d bytes sent, want 1000", e.Sent)
	}
	wantLog(t, p, 1, Request{Method: "GET", Upstream: 200, Fault: "past end"})
	wantLog(t, p, 2, Request{Method: "GET", Upstream: 200, Fault: "no headers"})
	wantLog(t, p, 3, Request{Method: "GET", Status: 200, Upstream: 200})
}

func TestDropRequestBody(t *testing.T) {
	up := upstream(t, nil)
	p := New(t, up, Options{})
	c := client(t, nil)
	base := p.URL().String()
	b, digest := blob(t, 200*1024)
	exists := func() int {
		return statusOf(t, c, http.MethodHead, up.String()+"/v2/test/dropreq/blobs/"+digest)
	}

	// A PUT of known length, cut after 1000 bytes.
	p.Add(Rule{Method: "PUT", Path: `/blobs/uploads/`, Times: 1, Kind: DropRequestBody, Bytes: 1000})
	resp := do(t, c, http.MethodPost, base+"/v2/test/dropreq/blobs/uploads/", nil)
	resp.Body.Close()
	if _, err := try(c, http.MethodPut, resp.Header.Get("Location")+"?digest="+digest, bytes.NewReader(b)); err == nil {
		t.Errorf("PUT with its body cut: no error")
	}
	if s := exists(); s != http.StatusNotFound {
		t.Errorf("blob after a cut PUT: HEAD status %d, want 404", s)
	}
	if e := wantLog(t, p, 1, Request{Method: "PUT", Fault: "drop-request-body"}); e.Received != 1000 {
		t.Errorf("cut PUT logged %d bytes received, want 1000", e.Received)
	}

	// A single-request chunked upload shorter than Bytes: the upstream never sees its end.
	p.Add(Rule{Method: "POST", Path: `/blobs/uploads/`, Times: 1, Kind: DropRequestBody, Bytes: 1 << 30})
	chunked := io.MultiReader(bytes.NewReader(b)) // hides the length
	if _, err := try(c, http.MethodPost, base+"/v2/test/dropreq/blobs/uploads/?digest="+digest, chunked); err == nil {
		t.Errorf("chunked POST with its body cut: no error")
	}
	if s := exists(); s != http.StatusNotFound {
		t.Errorf("blob after a cut chunked POST: HEAD status %d, want 404", s)
	}
	if e := wantLog(t, p, 2, Request{Method: "POST", Fault: "drop-request-body"}); e.Received != int64(len(b)) {
		t.Errorf("cut POST logged %d bytes received, want %d", e.Received, len(b))
	}

	if s := putBlob(t, c, base, "test/dropreq", b, digest); s != http.StatusCreated {
		t.Errorf("uploading without a fault: status %d", s)
	}
	if s := exists(); s != http.StatusOK {
		t.Errorf("blob after an upload: HEAD status %d, want 200", s)
	}
	if u := p.BlobUploads(); len(u) != 1 || u[digest] != 1 {
		t.Errorf("uploads %v, want %s once", u, digest)
	}
}

func TestStall(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	base := p.URL().String()
	b, digest := blob(t, 50*1024)
	if s := putBlob(t, c, base, "test/stall", b, digest); s != http.StatusCreated {
		t.Fatalf("uploading a blob: status %d", s)
	}
	blobURL := base + "/v2/test/stall/blobs/" + digest
	const delay = 300 * time.Millisecond

	t.Run("delay", func(t *testing.T) {
		p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: Stall, Bytes: 1000, Delay: delay})
		resp := do(t, c, http.MethodGet, blobURL, nil)
		defer resp.Body.Close()
		head := make([]byte, 1000)
		if _, err := io.ReadFull(resp.Body, head); err != nil {
			t.Fatalf("reading the first 1000 bytes: %v", err)
		}
		start := time.Now()
		rest, err := io.ReadAll(resp.Body)
		if took := time.Since(start); took < delay-50*time.Millisecond {
			t.Errorf("the rest came after %v, want about %v", took, delay)
		}
		if err != nil || !bytes.Equal(append(head, rest...), b) {
			t.Errorf("read %d bytes, %v; want the whole blob", 1000+len(rest), err)
		}
	})

	t.Run("before headers", func(t *testing.T) {
		p.Add(Rule{Method: "HEAD", Path: `/blobs/sha256:`, Times: 1, Kind: Stall, Bytes: 0, Delay: delay})
		start := time.Now()
		if s := statusOf(t, c, http.MethodHead, blobURL); s != 200 {
			t.Errorf("HEAD: status %d", s)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("HEAD answered after %v, want %v at least", took, delay)
		}
	})

	t.Run("hang", func(t *testing.T) {
		p.ClearRequests()
		p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: Stall, Bytes: 1000, Hang: true})
		ctx, cancel := context.WithTimeout(context.Background(), delay)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, blobURL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(got) != 1000 || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("read %d bytes, %v; want 1000 and the client's deadline", len(got), err)
		}
		if e := wantLog(t, p, 0, Request{Method: "GET", Upstream: 200, Fault: "stall"}); e.Sent != 1000 {
			t.Errorf("hung GET logged %d bytes sent, want 1000", e.Sent)
		}
	})

	t.Run("hang until close", func(t *testing.T) {
		q := New(t, p.upstream, Options{})
		q.Add(Rule{Method: "GET", Kind: Stall, Bytes: 1000, Hang: true})
		resp := do(t, c, http.MethodGet, q.URL().String()+"/v2/test/stall/blobs/"+digest, nil)
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
			t.Fatalf("reading the first 1000 bytes: %v", err)
		}
		start := time.Now()
		q.Close()
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("reading after the proxy closed: no error")
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("closing the proxy during a hang took %v", took)
		}
	})
}

func TestTimesAfterClear(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	v2 := p.URL().String() + "/v2/"
	statuses := func(n int) []int {
		var s []int
		for range n {
			s = append(s, statusOf(t, c, http.MethodGet, v2))
		}
		return s
	}

	p.Add(Rule{Method: "GET", Path: `^/v2/$`, After: 2, Times: 2, Kind: Status, Status: 500})
	p.Add(Rule{Method: "POST", Path: `^/v2/$`, Kind: Status, Status: 418}) // never matches
	if got, want := fmt.Sprint(statuses(6)), "[200 200 500 500 200 200]"; got != want {
		t.Errorf("After 2, Times 2: statuses %s, want %s", got, want)
	}

	// Every rule counts every request it matches; the first due applies.
	p.Clear()
	p.Add(Rule{Path: `^/v2/$`, Times: 1, Kind: Status, Status: 500})
	p.Add(Rule{Path: `^/v2/$`, Times: 2, Kind: Status, Status: 503})
	if got, want := fmt.Sprint(statuses(3)), "[500 503 200]"; got != want {
		t.Errorf("two rules: statuses %s, want %s", got, want)
	}

	// A permanent fault lasts until Clear.
	p.Clear()
	p.Add(Rule{Method: "get", Path: `/v2/`, Kind: Status, Status: 503})
	if got, want := fmt.Sprint(statuses(3)), "[503 503 503]"; got != want {
		t.Errorf("permanent fault: statuses %s, want %s", got, want)
	}
	p.Clear()
	if got, want := fmt.Sprint(statuses(1)), "[200]"; got != want {
		t.Errorf("after Clear: statuses %s, want %s", got, want)
	}

	if n := p.Count("GET", `^/v2/$`); n != 13 {
		t.Errorf("Count(GET, ^/v2/$) = %d, want 13", n)
	}
	if n := p.Count("", ""); n != 13 {
		t.Errorf("Count of everything = %d, want 13", n)
	}
	if n := p.Count("POST", ""); n != 0 {
		t.Errorf("Count(POST) = %d, want 0", n)
	}
	if n := p.CountFault("status"); n != 7 {
		t.Errorf("CountFault(status) = %d, want 7", n)
	}
}

func TestBlobUploadsAndMounts(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	opts := remoteOpts(t, nil)
	img := pushPull(t, p, "test/a", opts)
	// Pushing again uploads nothing.
	if err := remote.Write(ref(t, p.Host()+"/test/a:again"), img, opts...); err != nil {
		t.Fatalf("pushing again: %v", err)
	}
	uploads := p.BlobUploads()
	if len(uploads) != 4 {
		t.Errorf("uploads %v, want 4 blobs", uploads)
	}
	for d, n := range uploads {
		if n != 1 {
			t.Errorf("blob %s uploaded %d times, want 1", d, n)
		}
	}

	layers, _ := img.Layers()
	from := ref(t, p.Host()+"/test/a:latest")
	dest := ref(t, p.Host()+"/test/b:latest").Context()
	if err := remote.WriteLayer(dest, &remote.MountableLayer{Layer: layers[0], Reference: from}, opts...); err != nil {
		t.Fatalf("mounting a layer: %v", err)
	}
	d, _ := layers[0].Digest()
	if m := p.BlobMounts(); len(m) != 1 || m[d.String()] != 1 {
		t.Errorf("mounts %v, want %v once", m, d)
	}
	if u := p.BlobUploads(); len(u) != 4 {
		t.Errorf("uploads after a mount: %v, want the 4 of before", u)
	}

	// A layer that cannot be mounted is uploaded.
	other, err := random.Layer(1000, types.DockerLayer)
	if err != nil {
		t.Fatalf("making a layer: %v", err)
	}
	if err := remote.WriteLayer(dest, &remote.MountableLayer{Layer: other, Reference: from}, opts...); err != nil {
		t.Fatalf("writing a layer: %v", err)
	}
	od, _ := other.Digest()
	if p.BlobUploads()[od.String()] != 1 || len(p.BlobMounts()) != 1 {
		t.Errorf("unmountable layer: uploads %v, mounts %v", p.BlobUploads(), p.BlobMounts())
	}
}

// TestClientRetries shows the intended use: a registry client's retries get it past
// transient faults.
func TestClientRetries(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	p.Add(Rule{Method: "GET", Path: `/manifests/`, Times: 2, Kind: Status, Status: 503})
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: Status, Status: 500})
	pushPull(t, p, "test/retry", remoteOpts(t, nil))
	if n := p.CountFault("status"); n != 3 {
		t.Errorf("%d faults applied, want 3", n)
	}
}

// tlsFiles makes a CA and a certificate it signs for 127.0.0.1 and localhost, writes
// the certificate and key to files, and returns the CA pool, the files and the
// certificate.
func tlsFiles(t *testing.T) (*x509.CertPool, string, string, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("making a CA key: %v", err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "faultproxy test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("making a CA certificate: %v", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("making a key: %v", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("making a certificate: %v", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("encoding a key: %v", err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatalf("writing the certificate: %v", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatalf("writing the key: %v", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("loading the certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, certFile, keyFile, cert
}

func TestHTTPS(t *testing.T) {
	pool, certFile, keyFile, cert := tlsFiles(t)
	up := upstream(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	p := New(t, up, Options{
		CertFile:          certFile,
		KeyFile:           keyFile,
		UpstreamTransport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	})
	if p.URL().Scheme != "https" {
		t.Fatalf("proxy URL %v, want https", p.URL())
	}
	pushPull(t, p, "test/tls", remoteOpts(t, pool))
	if n := len(p.BlobUploads()); n != 4 {
		t.Errorf("%d blobs uploaded through the proxy, want 4", n)
	}

	c := client(t, pool)
	resp := do(t, c, http.MethodPost, p.URL().String()+"/v2/test/tls/blobs/uploads/", nil)
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "https://"+p.Host()+"/") {
		t.Errorf("upload Location %q, want one on https://%s", loc, p.Host())
	}

	b, digest := blob(t, 20000)
	if s := putBlob(t, c, p.URL().String(), "test/tls", b, digest); s != http.StatusCreated {
		t.Fatalf("uploading a blob: status %d", s)
	}
	p.Add(Rule{Method: "GET", Path: `/blobs/`, Times: 1, Kind: DropResponseBody, Bytes: 500})
	p.Add(Rule{Method: "GET", Path: `/blobs/`, After: 1, Times: 1, Kind: Reset})
	resp = do(t, c, http.MethodGet, p.URL().String()+"/v2/test/tls/blobs/"+digest, nil)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != 500 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("dropped GET over TLS: %d bytes, %v; want 500 and an unexpected EOF", len(got), err)
	}
	if _, err := try(c, http.MethodGet, p.URL().String()+"/v2/test/tls/blobs/"+digest, nil); err == nil {
		t.Errorf("reset GET over TLS: no error")
	}
	if s := statusOf(t, c, http.MethodGet, p.URL().String()+"/v2/test/tls/blobs/"+digest); s != 200 {
		t.Errorf("third GET over TLS: status %d", s)
	}
}
