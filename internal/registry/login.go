package registry

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Login checks user and password against host (basic or bearer-token auth, whichever the
// registry asks for) by reaching its /v2/ endpoint with them.
func (c *Client) Login(ctx context.Context, host, user, password string) error {
	var opts []name.Option
	if h := c.hosts[host]; h != nil && h.insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return &Error{Op: "logging in to", Ref: fmt.Sprintf("%q", host), Reason: oneLine(err.Error()), Err: err}
	}
	auth := &authn.Basic{Username: user, Password: password}
	err = c.retry(ctx, "logging in to "+host, func(ctx context.Context) error {
		rt, err := transport.NewWithContext(ctx, reg, auth, c.transport, []string{reg.Scope(transport.PullScope)})
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s/v2/", reg.Scheme(), reg.RegistryStr()), nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: rt}).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return transport.CheckError(resp, http.StatusOK)
	})
	return explain(err, "logging in to", host+" as "+user, host, true)
}

// ConfigDir is where login writes credentials, as docker does: $DOCKER_CONFIG, else
// ~/.docker. Reading also looks at $REGISTRY_AUTH_FILE and containers' auth.json (the default
// keychain).
func ConfigDir() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".docker"
	}
	return filepath.Join(home, ".docker")
}

// SaveLogin stores user and password for host in the docker config in dir, through its
// credsStore or credHelpers when it names one, else in auths.
func SaveLogin(dir, host, user, password string) error {
	cf, err := config.Load(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, config.ConfigFileName), err)
	}
	key := configKey(host)
	if err := cf.GetCredentialsStore(key).Store(types.AuthConfig{ServerAddress: key, Username: user, Password: password}); err != nil {
		return fmt.Errorf("storing credentials for %s: %w", host, err)
	}
	if err := cf.Save(); err != nil {
		return fmt.Errorf("writing %s: %w", cf.Filename, err)
	}
	return nil
}

// RemoveLogin forgets the credentials for host in the docker config in dir.
func RemoveLogin(dir, host string) error {
	cf, err := config.Load(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, config.ConfigFileName), err)
	}
	key := configKey(host)
	if _, ok := cf.AuthConfigs[key]; !ok && cf.CredentialsStore == "" && cf.CredentialHelpers[key] == "" {
		return fmt.Errorf("not logged in to %s", host)
	}
	if err := cf.GetCredentialsStore(key).Erase(key); err != nil {
		return fmt.Errorf("removing credentials for %s: %w", host, err)
	}
	if err := cf.Save(); err != nil {
		return fmt.Errorf("writing %s: %w", cf.Filename, err)
	}
	return nil
}

// configKey is the key docker uses for a registry in config.json: Docker Hub keeps its
// historical URL.
func configKey(host string) string {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return authn.DefaultAuthKey
	}
	return host
}
