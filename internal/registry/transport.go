package registry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// hostTLS is what kiln knows about reaching one registry host (host or host:port).
type hostTLS struct {
	// insecure allows plain HTTP and TLS without certificate verification.
	insecure bool
	// caFiles are PEM bundles trusted for this host, on top of the system's CAs.
	caFiles []string
	// certFile and keyFile are a client certificate presented to this host (mTLS).
	certFile, keyFile string
}

// certsDirs are where per-registry certificates are looked up as docker and podman do:
// DIR/HOST/*.crt are CAs, DIR/HOST/*.cert with *.key are client certificates.
func certsDirs() []string {
	dirs := []string{"/etc/docker/certs.d", "/etc/containers/certs.d"}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".config", "containers", "certs.d"))
	}
	return dirs
}

// hostTransport sends each request through a transport configured for its host: the
// verifying default, one that trusts extra CAs or presents a client certificate, or one that
// skips verification for insecure hosts. It refuses plain HTTP to hosts that are neither
// insecure nor loopback, which go-containerregistry would otherwise fall back to for private
// addresses.
type hostTransport struct {
	hosts     map[string]*hostTLS
	certsDirs []string
	warn      func(format string, args ...any)

	mu    sync.Mutex
	byKey map[string]http.RoundTripper
}

func newHostTransport(hosts map[string]*hostTLS, certsDirs []string, warn func(string, ...any)) *hostTransport {
	return &hostTransport{hosts: hosts, certsDirs: certsDirs, warn: warn, byKey: map[string]http.RoundTripper{}}
}

// plainHTTPError is returned for a plain HTTP request to a host that must be reached over TLS.
type plainHTTPError struct{ host string }

func (e *plainHTTPError) Error() string {
	return fmt.Sprintf("%s would be reached over plain HTTP, which is allowed only for registries named with --insecure-registry", e.host)
}

// RoundTrip implements http.RoundTripper.
func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	h := t.hosts[host]
	if req.URL.Scheme == "http" && (h == nil || !h.insecure) && !isLoopback(host) {
		return nil, &plainHTTPError{host: host}
	}
	rt, err := t.transportFor(host, h)
	if err != nil {
		return nil, err
	}
	return rt.RoundTrip(req)
}

// transportFor builds (once) the transport for host.
func (t *hostTransport) transportFor(host string, h *hostTLS) (http.RoundTripper, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rt, ok := t.byKey[host]; ok {
		return rt, nil
	}
	cfg := hostTLS{}
	if h != nil {
		cfg = *h
	}
	t.addCertsDirs(host, &cfg)
	if !cfg.insecure && len(cfg.caFiles) == 0 && cfg.certFile == "" {
		t.byKey[host] = remote.DefaultTransport
		return remote.DefaultTransport, nil
	}
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("setting up TLS for %s: %w", host, err)
	}
	if cfg.insecure {
		t.warn("registry %s is insecure: plain HTTP is allowed and its certificate is not verified (--insecure-registry)", host)
	}
	rt := remote.DefaultTransport.(*http.Transport).Clone()
	rt.TLSClientConfig = tlsConfig
	t.byKey[host] = rt
	return rt, nil
}

// addCertsDirs adds the CAs and client certificate found in the certs.d directories for host.
func (t *hostTransport) addCertsDirs(host string, cfg *hostTLS) {
	for _, d := range t.certsDirs {
		dir := filepath.Join(d, strings.ReplaceAll(host, "/", "_"))
		if cas, _ := filepath.Glob(filepath.Join(dir, "*.crt")); len(cas) > 0 {
			cfg.caFiles = append(cfg.caFiles, cas...)
		}
		if cfg.certFile != "" {
			continue
		}
		if certs, _ := filepath.Glob(filepath.Join(dir, "*.cert")); len(certs) > 0 {
			key := strings.TrimSuffix(certs[0], ".cert") + ".key"
			if _, err := os.Stat(key); err == nil {
				cfg.certFile, cfg.keyFile = certs[0], key
			}
		}
	}
}

// tlsConfig turns h into a TLS client configuration.
func (h hostTLS) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.insecure {
		cfg.InsecureSkipVerify = true //nolint:gosec // only for hosts the user named insecure
	}
	if len(h.caFiles) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, f := range h.caFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("reading CA file: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("reading CA file %s: no PEM certificate in it", f)
			}
		}
		cfg.RootCAs = pool
	}
	if h.certFile != "" {
		cert, err := tls.LoadX509KeyPair(h.certFile, h.keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate %s with key %s: %w", h.certFile, h.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// isLoopback reports hosts that docker and podman reach over plain HTTP without being told:
// localhost and loopback addresses.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}
