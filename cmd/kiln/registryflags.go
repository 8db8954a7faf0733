package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/registry"
)

// registryFlags are the flags that say how registries are reached, shared by every command
// that talks to one.
type registryFlags struct {
	insecure, cas, clientCerts, mirrors []string
	registriesConf, authfile            string
	retries                             int
	retryDelay, timeout                 time.Duration
}

// register adds every registry flag to fl.
func (f *registryFlags) register(fl *pflag.FlagSet) {
	f.registerConnection(fl)
	fl.StringArrayVar(&f.mirrors, "registry-mirror", nil, "pull through a mirror: MIRROR (for docker.io) or REGISTRY=MIRROR (repeatable, tried in order)")
	fl.StringVar(&f.authfile, "authfile", "", "credentials file to read first (default: $REGISTRY_AUTH_FILE, the docker config, containers' auth.json)")
}

// registerConnection adds the flags about connections only: TLS, plain HTTP and retries.
func (f *registryFlags) registerConnection(fl *pflag.FlagSet) {
	fl.StringArrayVar(&f.insecure, "insecure-registry", nil, "allow plain HTTP or unverified TLS for this registry (repeatable)")
	fl.StringArrayVar(&f.cas, "registry-ca", nil, "trust the CA certificates in FILE for REGISTRY: REGISTRY=FILE (repeatable)")
	fl.StringArrayVar(&f.clientCerts, "registry-client-cert", nil, "present a client certificate to REGISTRY: REGISTRY=CERT,KEY (repeatable)")
	fl.StringVar(&f.registriesConf, "registries-conf", "", "registry configuration file (default /etc/kiln/registries.toml and ~/.config/kiln/registries.toml)")
	fl.IntVar(&f.retries, "retry", registry.DefaultRetries, "how many times to retry a registry request that failed transiently")
	fl.DurationVar(&f.retryDelay, "retry-delay", registry.DefaultRetryDelay, "wait before the first retry (it doubles with each retry; Retry-After is honoured)")
	fl.DurationVar(&f.timeout, "registry-timeout", registry.DefaultIdleTimeout, "give up on (and retry) a registry connection that sends nothing for this long")
}

// options turns the flags into registry options.
func (f *registryFlags) options() ([]registry.Option, error) {
	files := registry.DefaultConfigFiles()
	if f.registriesConf != "" {
		files = []string{f.registriesConf}
	}
	cfg, err := registry.LoadConfig(files...)
	if err != nil {
		return nil, err
	}
	opts := []registry.Option{
		registry.WithConfig(cfg),
		registry.WithInsecure(f.insecure...),
		registry.WithKeychain(registry.FileKeychain(registry.AuthFiles(f.authfile)...)),
		registry.WithRetries(f.retries),
		registry.WithRetryDelay(f.retryDelay),
		registry.WithIdleTimeout(f.timeout),
	}
	for _, v := range f.cas {
		reg, file, ok := strings.Cut(v, "=")
		if !ok || reg == "" || file == "" {
			return nil, fmt.Errorf("--registry-ca %q: use REGISTRY=FILE", v)
		}
		opts = append(opts, registry.WithCA(reg, file))
	}
	for _, v := range f.clientCerts {
		reg, pair, ok := strings.Cut(v, "=")
		cert, key, ok2 := strings.Cut(pair, ",")
		if !ok || !ok2 || reg == "" || cert == "" || key == "" {
			return nil, fmt.Errorf("--registry-client-cert %q: use REGISTRY=CERT,KEY", v)
		}
		opts = append(opts, registry.WithClientCert(reg, cert, key))
	}
	for _, v := range f.mirrors {
		reg, mirror, err := registry.ParseMirrorFlag(v)
		if err != nil {
			return nil, err
		}
		opts = append(opts, registry.WithMirrors(reg, mirror))
	}
	return opts, nil
}
