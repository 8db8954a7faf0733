// Package registry is kiln's only HTTP client of container registries.
//
// It resolves references to images for one platform, pushes images under one or more
// names, checks push access and reads manifest digests. The protocol is go-containerregistry's
// remote package; this package adds kiln's choices on top:
//   - which hosts may be reached over plain HTTP or unverified TLS, which CAs and client
//     certificates each host gets (flags, registries.toml, certs.d directories);
//   - mirrors and rewrites of registries (registries.toml, --registry-mirror);
//   - where credentials come from (docker config.json, containers auth.json, helpers);
//   - retries with backoff and jitter that honour Retry-After, stall detection, and layer
//     downloads that resume where a dropped connection left them;
//   - one-line errors that name the reference, the registry's answer and the fix.
package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Defaults of the retry policy.
const (
	DefaultRetries     = 4
	DefaultRetryDelay  = time.Second
	DefaultIdleTimeout = 60 * time.Second
)

// Option configures a Client.
type Option func(*Client) error

// WithInsecure lets the client talk plain HTTP, or TLS without certificate verification, to
// the given registries (host or host:port, exactly as they appear in references). Every
// other registry is reached over verified TLS, except loopback ones, which may answer plain
// HTTP as docker allows.
func WithInsecure(registries ...string) Option {
	return func(c *Client) error {
		for _, r := range registries {
			for _, h := range hostKeys(r) {
				c.host(h).insecure = true
			}
		}
		return nil
	}
}

// WithCA trusts the PEM certificates in file for registry, on top of the system's CAs.
func WithCA(registry, file string) Option {
	return func(c *Client) error {
		for _, h := range hostKeys(registry) {
			c.host(h).caFiles = append(c.host(h).caFiles, file)
		}
		return nil
	}
}

// WithClientCert presents the certificate in certFile, with the key in keyFile, to registry.
func WithClientCert(registry, certFile, keyFile string) Option {
	return func(c *Client) error {
		for _, h := range hostKeys(registry) {
			c.host(h).certFile, c.host(h).keyFile = certFile, keyFile
		}
		return nil
	}
}

// WithMirrors adds mirrors for pulls from registry, tried in order before it.
func WithMirrors(registry string, mirrors ...string) Option {
	return func(c *Client) error {
		prefix, err := normalizePrefix(registry)
		if err != nil {
			return err
		}
		for i := range c.routes {
			if c.routes[i].prefix == prefix {
				c.routes[i].mirrors = append(c.routes[i].mirrors, mirrors...)
				return nil
			}
		}
		c.routes = append(c.routes, route{prefix: prefix, location: prefix, mirrors: mirrors})
		return nil
	}
}

// WithConfig applies a registries.toml configuration (see Config).
func WithConfig(cfg Config) Option {
	return func(c *Client) error {
		for _, r := range cfg.Registries {
			prefix, err := normalizePrefix(r.Prefix)
			if err != nil {
				return err
			}
			location := r.Location
			if location == "" {
				location = prefix
			}
			rt := route{prefix: prefix, location: location}
			host := hostOf(location)
			if r.Insecure {
				c.host(host).insecure = true
			}
			if r.CAFile != "" {
				c.host(host).caFiles = append(c.host(host).caFiles, r.CAFile)
			}
			if r.ClientCert != "" || r.ClientKey != "" {
				if r.ClientCert == "" || r.ClientKey == "" {
					return fmt.Errorf("registry configuration for %s: client-cert and client-key go together", r.Prefix)
				}
				c.host(host).certFile, c.host(host).keyFile = r.ClientCert, r.ClientKey
			}
			for _, m := range r.Mirrors {
				if m.Location == "" {
					return fmt.Errorf("registry configuration for %s: a mirror has no location", r.Prefix)
				}
				rt.mirrors = append(rt.mirrors, m.Location)
				if m.Insecure {
					c.host(hostOf(m.Location)).insecure = true
				}
			}
			c.routes = append(c.routes, rt)
		}
		return nil
	}
}

// WithPlatform sets the platform chosen from multi-platform images. The default is linux on
// the architecture kiln was built for.
func WithPlatform(p v1.Platform) Option {
	return func(c *Client) error { c.platform = p; return nil }
}

// WithKeychain sets where credentials come from. The default is FileKeychain(AuthFiles("")).
func WithKeychain(k authn.Keychain) Option {
	return func(c *Client) error { c.keychain = k; return nil }
}

// WithRetries sets how many times a request is retried after a transient failure (a reset
// or dropped connection, a stall, a 408, 429 or 5xx answer). Zero turns retries off.
func WithRetries(n int) Option {
	return func(c *Client) error { c.policy.retries = max(n, 0); return nil }
}

// WithRetryDelay sets the wait before the first retry; it doubles with each further retry.
func WithRetryDelay(d time.Duration) Option {
	return func(c *Client) error { c.policy.delay = d; return nil }
}

// WithIdleTimeout sets how long a registry may send nothing before the request is abandoned
// (and retried). Zero waits forever.
func WithIdleTimeout(d time.Duration) Option {
	return func(c *Client) error { c.policy.idle = d; return nil }
}

// WithUserAgent sets the User-Agent sent with every request (go-containerregistry appends
// its own product token).
func WithUserAgent(s string) Option {
	return func(c *Client) error { c.userAgent = s; return nil }
}

// WithWarnings sets where warnings go: retries, insecure registries, failing mirrors. The
// default discards them.
func WithWarnings(w io.Writer) Option {
	return func(c *Client) error { c.warnings = w; return nil }
}

// WithCertsDirs replaces the certs.d directories searched for per-registry CAs and client
// certificates (default /etc/docker/certs.d, /etc/containers/certs.d and
// ~/.config/containers/certs.d).
func WithCertsDirs(dirs ...string) Option {
	return func(c *Client) error { c.certsDirs = dirs; return nil }
}

// Client talks to registries. It is safe for concurrent use.
type Client struct {
	hosts     map[string]*hostTLS
	certsDirs []string
	routes    []route
	platform  v1.Platform
	keychain  authn.Keychain
	policy    retryPolicy
	userAgent string
	transport http.RoundTripper

	warnMu   sync.Mutex
	warnings io.Writer
	warned   map[string]bool
}

// New returns a Client configured by opts. CA and client certificate files are read now, so
// that a mistyped path fails before any work starts.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		hosts:     map[string]*hostTLS{},
		certsDirs: certsDirs(),
		platform:  v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		keychain:  FileKeychain(AuthFiles("")...),
		policy:    retryPolicy{retries: DefaultRetries, delay: DefaultRetryDelay, idle: DefaultIdleTimeout},
		warnings:  io.Discard,
		warned:    map[string]bool{},
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	for host, h := range c.hosts {
		if _, err := h.tlsConfig(); err != nil {
			return nil, fmt.Errorf("setting up TLS for %s: %w", host, err)
		}
	}
	sortRoutes(c.routes)
	c.transport = &retryTransport{next: newHostTransport(c.hosts, c.certsDirs, c.warnOnce), policy: c.policy}
	return c, nil
}

// host returns the TLS settings of host, creating them.
func (c *Client) host(host string) *hostTLS {
	h := c.hosts[host]
	if h == nil {
		h = &hostTLS{}
		c.hosts[host] = h
	}
	return h
}

// hostKeys are the keys under which a registry's settings are stored: as written, and as
// go-containerregistry names it ("docker.io" is "index.docker.io").
func hostKeys(registry string) []string {
	keys := []string{registry}
	if reg, err := name.NewRegistry(registry, name.WeakValidation); err == nil && reg.RegistryStr() != registry {
		keys = append(keys, reg.RegistryStr())
	}
	return keys
}

// hostOf is the registry host of a location such as "mirror:5000/hub".
func hostOf(location string) string {
	host, _, _ := strings.Cut(location, "/")
	if reg, err := name.NewRegistry(host, name.WeakValidation); err == nil {
		return reg.RegistryStr()
	}
	return host
}

// warnf writes a warning.
func (c *Client) warnf(format string, args ...any) {
	c.warnMu.Lock()
	defer c.warnMu.Unlock()
	fmt.Fprintf(c.warnings, "kiln: warning: "+format+"\n", args...)
}

// warnOnce writes a warning the first time it is given.
func (c *Client) warnOnce(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.warnMu.Lock()
	seen := c.warned[msg]
	c.warned[msg] = true
	c.warnMu.Unlock()
	if !seen {
		c.warnf("%s", msg)
	}
}

// parse reads a docker reference ("busybox" is docker.io/library/busybox:latest), marking it
// insecure when its registry was named insecure.
func (c *Client) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, &Error{Op: "parsing image reference", Ref: fmt.Sprintf("%q", ref), Reason: oneLine(err.Error()), Err: err}
	}
	if h := c.hosts[r.Context().RegistryStr()]; h != nil && h.insecure {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// rewrite moves r under location, replacing the route's prefix.
func (c *Client) rewrite(r name.Reference, location, rest string) (name.Reference, error) {
	s := location + rest
	switch id := r.(type) {
	case name.Digest:
		s += "@" + id.DigestStr()
	default:
		s += ":" + r.Identifier()
	}
	return c.parse(s)
}

// origin is where r really is: r itself, or r moved by a registries.toml location.
func (c *Client) origin(r name.Reference) (name.Reference, error) {
	rt, rest, ok := matchRoute(c.routes, r.Context().Name())
	if !ok || rt.location == rt.prefix {
		return r, nil
	}
	return c.rewrite(r, rt.location, rest)
}

// resolve parses ref and moves it to its origin.
func (c *Client) resolve(ref string) (name.Reference, error) {
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	return c.origin(r)
}

// pullSources are the places r can be pulled from, in order: its mirrors, then its origin.
func (c *Client) pullSources(r name.Reference) ([]source, error) {
	rt, rest, ok := matchRoute(c.routes, r.Context().Name())
	var out []source
	if ok {
		for _, m := range rt.mirrors {
			mr, err := c.rewrite(r, m, rest)
			if err != nil {
				return nil, fmt.Errorf("mirror %s of %s: %w", m, rt.prefix, err)
			}
			out = append(out, source{ref: mr, mirror: true})
		}
	}
	o, err := c.origin(r)
	if err != nil {
		return nil, err
	}
	return append(out, source{ref: o}), nil
}

// source is one place to pull from.
type source struct {
	ref    name.Reference
	mirror bool
}

// authenticated reports whether the keychain has credentials for repo.
func (c *Client) authenticated(repo name.Repository) bool {
	auth, err := c.keychain.Resolve(repo)
	return err == nil && auth != authn.Anonymous
}

// remoteOptions are the go-containerregistry options every call shares. go-containerregistry's
// own retries are off: retryTransport does them, honouring Retry-After.
func (c *Client) remoteOptions(ctx context.Context) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.keychain),
		remote.WithTransport(c.transport),
		remote.WithPlatform(c.platform),
		remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Steps: 1}),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
	if c.userAgent != "" {
		opts = append(opts, remote.WithUserAgent(c.userAgent))
	}
	return opts
}
