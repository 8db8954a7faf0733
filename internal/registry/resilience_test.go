package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// fast is the retry policy of these tests: no real waiting.
func fast() []Option {
	return []Option{WithKeychain(anonymous), WithRetryDelay(time.Millisecond)}
}

// cutBlobs serves the first n blob GETs truncated to half their length, then closes the
// connection; later requests pass.
func cutBlobs(n int32, seen *atomic.Int32) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || seen.Add(1) > n {
				h.ServeHTTP(w, r)
				return
			}
			rec := &recorder{header: http.Header{}}
			h.ServeHTTP(rec, r)
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			w.Write(rec.body[:len(rec.body)/2])
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		})
	}
}

// recorder captures a response in memory.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int)   { r.status = s }
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body = append(r.body, p...)
	return len(p), nil
}

// readLayers reads every layer of img to the end, as the store does when it unpacks.
func readLayers(t *testing.T, img v1.Image) error {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func TestLayerDownloadResumes(t *testing.T) {
	backend := startRegistry(t, nil)
	img, err := random.Image(200_000, 3)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, backend+"/app:v1", img)
	for _, tt := range []struct {
		cuts, retries int32
		ok            bool
	}{{1, 2, true}, {3, 4, true}, {3, 1, false}} {
		var seen atomic.Int32
		host := startRegistry(t, func(http.Handler) http.Handler { return cutBlobs(tt.cuts, &seen)(proxyTo(backend)) })
		c := newTestClient(t, append(fast(), WithRetries(int(tt.retries)))...)
		// The config blob is cut too: it is retried with the manifest, the layers resume.
		got, err := c.Image(context.Background(), host+"/app:v1")
		if err == nil {
			err = readLayers(t, got)
		}
		if tt.ok != (err == nil) {
			t.Fatalf("%d cut downloads with %d retries: err = %v", tt.cuts, tt.retries, err)
		}
		if err != nil && !strings.Contains(err.Error(), "gave up after") {
			t.Fatalf("error does not say it gave up: %v", err)
		}
	}
}

// TestRetryAfter checks that a 429's Retry-After is waited for.
func TestRetryAfter(t *testing.T) {
	backend := startRegistry(t, nil)
	img, _ := random.Image(64, 1)
	seed(t, backend+"/app:v1", img)
	var first atomic.Bool
	var gap atomic.Int64
	var at time.Time
	host := startRegistry(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") && !first.Swap(true) {
				at = time.Now()
				w.Header().Set("Retry-After", "2")
				http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
				return
			}
			if strings.Contains(r.URL.Path, "/manifests/") && gap.Load() == 0 {
				gap.Store(int64(time.Since(at)))
			}
			proxyTo(backend).ServeHTTP(w, r)
		})
	})
	if _, err := newTestClient(t, fast()...).Image(context.Background(), host+"/app:v1"); err != nil {
		t.Fatal(err)
	}
	if g := time.Duration(gap.Load()); g < 1900*time.Millisecond {
		t.Fatalf("retried after %s, before the 2s Retry-After", g)
	}
}

// TestStall checks that a response that stops sending is abandoned and retried.
func TestStall(t *testing.T) {
	backend := startRegistry(t, nil)
	img, _ := random.Image(100_000, 1)
	seed(t, backend+"/app:v1", img)
	var stalled atomic.Bool
	release := make(chan struct{})
	host := startRegistry(t, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && !stalled.Swap(true) {
				rec := &recorder{header: http.Header{}}
				proxyTo(backend).ServeHTTP(rec, r)
				w.WriteHeader(rec.status)
				w.Write(rec.body[:1000])
				w.(http.Flusher).Flush()
				<-release
				return
			}
			proxyTo(backend).ServeHTTP(w, r)
		})
	})
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers
	c := newTestClient(t, append(fast(), WithIdleTimeout(300*time.Millisecond))...)
	got, err := c.Image(context.Background(), host+"/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := readLayers(t, got); err != nil {
		t.Fatalf("reading through a stall: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestMirrors(t *testing.T) {
	origin := startRegistry(t, nil)
	mirror := startRegistry(t, nil)
	img, _ := random.Image(64, 1)
	seed(t, mirror+"/hub/library/app:v1", img)
	var dead net.Listener
	dead, _ = net.Listen("tcp", "127.0.0.1:0")
	deadHost := dead.Addr().String()
	dead.Close()

	// The origin lacks the image: the mirror serves it. Bad mirrors are skipped.
	c := newTestClient(t, append(fast(), WithRetries(0),
		WithMirrors(origin, deadHost+"/hub", mirror+"/hub"))...)
	got, err := c.Image(context.Background(), origin+"/library/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, got) != mustDigest(t, img) {
		t.Fatal("wrong image from the mirror")
	}
	if err := readLayers(t, got); err != nil {
		t.Fatal(err)
	}
	// Without the image anywhere, the origin's error is reported.
	_, err = c.Image(context.Background(), origin+"/library/app:v2")
	if err == nil || !strings.Contains(err.Error(), origin+"/library/app:v2") {
		t.Fatalf("error %v does not name the origin reference", err)
	}
}

func TestConfigRewrite(t *testing.T) {
	backend := startRegistry(t, nil)
	img, _ := random.Image(64, 1)
	seed(t, backend+"/team/app:v1", img)
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.toml")
	os.WriteFile(conf, []byte(`
[[registry]]
prefix = "registry.example.com/apps"
location = "`+backend+`/team"
`), 0o644)
	cfg, err := LoadConfig(filepath.Join(dir, "missing.toml"), conf)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, append(fast(), WithConfig(cfg))...)
	got, err := c.Image(context.Background(), "registry.example.com/apps/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if mustDigest(t, got) != mustDigest(t, img) {
		t.Fatal("wrong image")
	}
	if err := c.Push(context.Background(), img, "registry.example.com/apps/other:v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Digest(context.Background(), "registry.example.com/apps/other:v1"); err != nil {
		t.Fatal(err)
	}

	os.WriteFile(conf, []byte("[[registry]]\nprefix = \"a.example\"\nlocaton = \"b\"\n"), 0o644)
	if _, err := LoadConfig(conf); err == nil || !strings.Contains(err.Error(), "locaton") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(conf, []byte("[[registry]]\nprefix = \"library\"\n"), 0o644)
	if cfg, err := LoadConfig(conf); err == nil {
		if _, err := New(WithConfig(cfg)); err == nil || !strings.Contains(err.Error(), "registry host") {
			t.Fatalf("prefix without a host: %v", err)
		}
	}
}

func TestParseMirrorFlag(t *testing.T) {
	for in, want := range map[string][2]string{
		"mirror.local:5000":                  {"docker.io", "mirror.local:5000"},
		"https://mirror.local/":              {"docker.io", "mirror.local"},
		"quay.io=mirror.local:5000/quay":     {"quay.io", "mirror.local:5000/quay"},
		"ghcr.io = http://m.example/ghcr/  ": {"ghcr.io", "m.example/ghcr"},
	} {
		reg, m, err := ParseMirrorFlag(in)
		if err != nil || reg != want[0] || m != want[1] {
			t.Errorf("ParseMirrorFlag(%q) = %q, %q, %v", in, reg, m, err)
		}
	}
	if _, _, err := ParseMirrorFlag("quay.io="); err == nil {
		t.Error("empty mirror accepted")
	}
}

// TestPushMountsWithinRegistry pushes to two repositories of one registry and one of another:
// each blob is uploaded once per registry, the second repository mounts it.
func TestPushMountsWithinRegistry(t *testing.T) {
	var mu sync.Mutex
	uploads := map[string]int{}
	mounts := 0
	count := func(id string) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") {
					uploads[id+" "+r.URL.Query().Get("digest")]++
				}
				if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
					mounts++
				}
				mu.Unlock()
				h.ServeHTTP(w, r)
			})
		}
	}
	a := startRegistry(t, count("a"))
	b := startRegistry(t, count("b"))
	img, _ := random.Image(10_000, 3)
	c := newTestClient(t, fast()...)
	if err := c.Push(context.Background(), img, a+"/one:v1", a+"/two:v1", b+"/three:v1"); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d := mustDigest(t, l).String()
		if uploads["a "+d] != 1 || uploads["b "+d] != 1 {
			t.Errorf("layer %s uploaded %d times to a, %d to b", d, uploads["a "+d], uploads["b "+d])
		}
	}
	// go-containerregistry's registry shares blobs between repositories, so it never needs the
	// mounts; test/e2e counts them against a real registry.
	_ = mounts
	for _, ref := range []string{a + "/two:v1", b + "/three:v1"} {
		if d, err := c.Digest(context.Background(), ref); err != nil || d != mustDigest(t, img) {
			t.Errorf("%s: %s %v", ref, d, err)
		}
	}
}

func TestCheckPush(t *testing.T) {
	host := startRegistry(t, requireBasicAuth("kiln", "secret"))
	good := newTestClient(t, WithKeychain(staticKeychain{&authn.Basic{Username: "kiln", Password: "secret"}}))
	if err := good.CheckPush(context.Background(), host+"/app:v1"); err != nil {
		t.Fatal(err)
	}
	err := newTestClient(t, WithKeychain(staticKeychain{&authn.Basic{Username: "kiln", Password: "nope"}})).CheckPush(context.Background(), host+"/app:v1")
	var rerr *Error
	if !errors.As(err, &rerr) || rerr.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "kiln login "+host) {
		t.Fatalf("wrong password: %v", err)
	}
	err = newTestClient(t, fast()...).CheckPush(context.Background(), host+"/app:v1")
	if err == nil || !strings.Contains(err.Error(), "no credentials for "+host) {
		t.Fatalf("no credentials: %v", err)
	}
}

func TestPlainHTTPRefused(t *testing.T) {
	for host, refused := range map[string]bool{
		"192.0.2.1:5000": true, "10.1.2.3": true, "registry.example.com": true,
		"localhost:5000": false, "127.0.0.1:5000": false, "[::1]:5000": false,
	} {
		ht := newHostTransport(map[string]*hostTLS{}, nil, func(string, ...any) {})
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/", nil)
		if refused {
			_, err := ht.RoundTrip(req)
			var plain *plainHTTPError
			if !errors.As(err, &plain) {
				t.Errorf("%s: plain HTTP not refused: %v", host, err)
			}
			msg := explain(err, "pulling", host+"/x", host, false).Error()
			if !strings.Contains(msg, "--insecure-registry "+host) || strings.Contains(msg, "\n") {
				t.Errorf("%s: %s", host, msg)
			}
		} else if !isLoopback(host) {
			t.Errorf("%s: not loopback", host)
		}
	}
}

func TestFileKeychain(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	auth := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	first := write("first.json", `{"auths":{"a.example":{"auth":"`+auth("ua", "pa")+`"}}}`)
	second := write("second.json", `{"auths":{"b.example":{"auth":"`+auth("ub", "pb")+`"},"a.example":{"auth":"`+auth("no", "no")+`"},
		"https://index.docker.io/v1/":{"auth":"`+auth("hub", "ph")+`"}}}`)
	kc := FileKeychain(filepath.Join(dir, "missing.json"), first, second)
	for ref, want := range map[string]string{"a.example/x": "ua", "b.example/x": "ub", "busybox": "hub", "c.example/x": ""} {
		r, _ := name.ParseReference(ref)
		a, err := kc.Resolve(r.Context())
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := a.Authorization()
		if cfg.Username != want {
			t.Errorf("%s: user %q, want %q", ref, cfg.Username, want)
		}
	}
	bad := write("bad.json", `{"auths":`)
	if _, err := FileKeychain(bad).Resolve(name.MustParseReference("a.example/x").Context()); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("broken file: %v", err)
	}
}
