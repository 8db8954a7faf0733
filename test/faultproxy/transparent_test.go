package faultproxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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
