package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/name"
)

// Config is the registries.toml file: how to reach registries, modelled on
// containers-registries.conf(5) so that podman and buildah users find their way:
//
//	[[registry]]
//	prefix = "docker.io"                 # the references this entry is about
//	location = "registry.internal/hub"   # where they really are (optional)
//	insecure = false                     # allow plain HTTP / unverified TLS
//	ca-file = "/etc/ssl/internal-ca.pem" # extra CA for this registry
//	client-cert = "cert.pem"             # mTLS, with client-key
//	client-key = "key.pem"
//	[[registry.mirror]]                  # tried in order before the location, for pulls
//	location = "mirror.internal:5000"
//	insecure = true
type Config struct {
	Registries []RegistryConfig `toml:"registry"`
}

// RegistryConfig is one [[registry]] entry.
type RegistryConfig struct {
	// Prefix is a registry host, or a host and repository path, that references must start
	// with (at a path boundary) for this entry to apply. The longest matching prefix wins.
	Prefix string `toml:"prefix"`
	// Location replaces Prefix in references, for pulls and pushes. Empty means Prefix.
	Location   string         `toml:"location"`
	Insecure   bool           `toml:"insecure"`
	CAFile     string         `toml:"ca-file"`
	ClientCert string         `toml:"client-cert"`
	ClientKey  string         `toml:"client-key"`
	Mirrors    []MirrorConfig `toml:"mirror"`
}

// MirrorConfig is one mirror of a registry entry. Mirrors serve pulls only.
type MirrorConfig struct {
	// Location replaces the entry's prefix in references, like RegistryConfig.Location.
	Location string `toml:"location"`
	Insecure bool   `toml:"insecure"`
}

// DefaultConfigFiles are the registries.toml files read when none is named: the system-wide
// one, then the user's, whose entries win over the system's for the same prefix.
func DefaultConfigFiles() []string {
	files := []string{"/etc/kiln/registries.toml"}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".config")
		}
	}
	if dir != "" {
		files = append(files, filepath.Join(dir, "kiln", "registries.toml"))
	}
	return files
}

// LoadConfig reads registries.toml files in order; files that do not exist are skipped, and
// a later entry replaces an earlier one with the same prefix. Relative file names inside a
// file are relative to its directory.
func LoadConfig(paths ...string) (Config, error) {
	var out Config
	for _, p := range paths {
		var c Config
		md, err := toml.DecodeFile(p, &c)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Config{}, fmt.Errorf("reading registry configuration %s: %w", p, err)
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			return Config{}, fmt.Errorf("reading registry configuration %s: unknown key %q", p, undecoded[0].String())
		}
		for _, r := range c.Registries {
			if r.Prefix == "" {
				return Config{}, fmt.Errorf("reading registry configuration %s: a [[registry]] entry has no prefix", p)
			}
			dir := filepath.Dir(p)
			for _, f := range []*string{&r.CAFile, &r.ClientCert, &r.ClientKey} {
				if *f != "" && !filepath.IsAbs(*f) {
					*f = filepath.Join(dir, *f)
				}
			}
			out.add(r)
		}
	}
	return out, nil
}

// add appends r, replacing an entry with the same prefix.
func (c *Config) add(r RegistryConfig) {
	for i := range c.Registries {
		if c.Registries[i].Prefix == r.Prefix {
			c.Registries[i] = r
			return
		}
	}
	c.Registries = append(c.Registries, r)
}

// ParseMirrorFlag reads a --registry-mirror value: MIRROR mirrors Docker Hub, as with
// docker's and kaniko's flag of that name; REGISTRY=MIRROR mirrors another registry.
func ParseMirrorFlag(s string) (registry, mirror string, err error) {
	registry, mirror, ok := strings.Cut(s, "=")
	if !ok {
		registry, mirror = "docker.io", s
	}
	registry, mirror = strings.TrimSpace(registry), strings.TrimSuffix(strings.TrimSpace(mirror), "/")
	for _, p := range []string{"https://", "http://"} {
		mirror = strings.TrimPrefix(mirror, p)
	}
	if registry == "" || mirror == "" {
		return "", "", fmt.Errorf("--registry-mirror %q: use MIRROR (for docker.io) or REGISTRY=MIRROR", s)
	}
	return registry, mirror, nil
}

// route maps references under prefix to location and its mirrors.
type route struct {
	prefix   string // normalized: "index.docker.io/library"
	location string
	mirrors  []string
}

// normalizePrefix turns a registry prefix into the form go-containerregistry gives
// repository names ("docker.io" is "index.docker.io").
func normalizePrefix(p string) (string, error) {
	p = strings.TrimSuffix(strings.TrimSpace(p), "/")
	host, path, _ := strings.Cut(p, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return "", fmt.Errorf("registry prefix %q must start with a registry host (such as docker.io or registry.example.com:5000)", p)
	}
	reg, err := name.NewRegistry(host, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("registry prefix %q: %w", p, err)
	}
	if path == "" {
		return reg.RegistryStr(), nil
	}
	return reg.RegistryStr() + "/" + path, nil
}

// sortRoutes orders routes longest prefix first, so the first match is the most specific.
func sortRoutes(routes []route) {
	sort.SliceStable(routes, func(i, j int) bool { return len(routes[i].prefix) > len(routes[j].prefix) })
}

// match returns the route for the repository repo ("index.docker.io/library/busybox") and
// the rest of repo after its prefix ("/busybox").
func matchRoute(routes []route, repo string) (route, string, bool) {
	for _, r := range routes {
		if repo == r.prefix {
			return r, "", true
		}
		if strings.HasPrefix(repo, r.prefix+"/") {
			return r, repo[len(r.prefix):], true
		}
	}
	return route{}, "", false
}
