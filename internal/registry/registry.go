// Package registry is kiln's only HTTP client of container registries.
//
// It resolves references to images for one platform, pushes images under one
// or more tags and reads manifest digests. Everything goes through
// go-containerregistry's remote package; this package adds kiln's choices on
// top: which hosts may be reached over plain HTTP or unverified TLS, which
// credentials are used, how often transient failures are retried, and error
// messages that name the reference involved.
package registry

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// defaultRetries is how many times a failed request is retried when the
// caller does not say otherwise.
const defaultRetries = 3

// defaultBackoff is the wait before the first retry; it grows threefold
// with each further retry.
const defaultBackoff = time.Second

// Option configures a Client.
type Option func(*Client)

// WithInsecure lets the client talk plain HTTP, or TLS without certificate
// verification, to the given registries (host or host:port, exactly as they
// appear in references). Every other registry is reached over verified TLS,
// except loopback registries, which go-containerregistry already reaches
// over HTTP when they do not speak TLS.
func WithInsecure(registries ...string) Option {
	return func(c *Client) {
		for _, r := range registries {
			c.insecure[r] = true
			// "docker.io" and "index.docker.io" name the same registry.
			if reg, err := name.NewRegistry(r); err == nil {
				c.insecure[reg.RegistryStr()] = true
			}
		}
	}
}

// WithPlatform sets the platform chosen from multi-platform images. The
// default is linux on the architecture kiln was built for.
func WithPlatform(p v1.Platform) Option {
	return func(c *Client) { c.platform = p }
}

// WithKeychain sets where credentials come from. The default is
// authn.DefaultKeychain (the docker config.json and its credential helpers).
func WithKeychain(k authn.Keychain) Option {
	return func(c *Client) { c.keychain = k }
}

// WithRetries sets how many times a request is retried, with exponential
// backoff, after a 408, 429 or 5xx answer or a reset connection. Zero turns
// retries off; the default is 3.
func WithRetries(n int) Option {
	return func(c *Client) {
		if n < 0 {
			n = 0
		}
		c.retries = n
	}
}

// WithUserAgent sets the User-Agent sent with every request (go-containerregistry
// appends its own product token).
func WithUserAgent(s string) Option {
	return func(c *Client) { c.userAgent = s }
}

// Client talks to registries. It is safe for concurrent use.
type Client struct {
	insecure  map[string]bool
	platform  v1.Platform
	keychain  authn.Keychain
	retries   int
	backoff   time.Duration
	userAgent string
	transport http.RoundTripper
}

// New returns a Client configured by opts.
func New(opts ...Option) *Client {
	c := &Client{
		insecure: map[string]bool{},
		platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		keychain: authn.DefaultKeychain,
		retries:  defaultRetries,
		backoff:  defaultBackoff,
	}
	for _, o := range opts {
		o(c)
	}
	c.transport = newTransport(c.insecure)
	return c
}

// parse reads a docker reference ("busybox" is docker.io/library/busybox:latest),
// marking it insecure when its registry was named in WithInsecure.
func (c *Client) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", ref, err)
	}
	if c.insecure[r.Context().RegistryStr()] {
		return name.ParseReference(ref, name.Insecure)
	}
	return r, nil
}

// remoteOptions are the go-containerregistry options every call shares.
func (c *Client) remoteOptions(ctx context.Context) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.keychain),
		remote.WithTransport(c.transport),
		remote.WithPlatform(c.platform),
		remote.WithRetryBackoff(remote.Backoff{
			Duration: c.backoff,
			Factor:   3.0,
			Jitter:   0.1,
			Steps:    c.retries + 1,
		}),
	}
	if c.userAgent != "" {
		opts = append(opts, remote.WithUserAgent(c.userAgent))
	}
	return opts
}
