package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// AuthFiles are the credential files kiln reads, in order; the first that holds an entry for
// a registry (directly, or through its credsStore or credHelpers) supplies the credentials.
// authfile, when not empty, comes first (buildah's --authfile).
//
//	authfile, $REGISTRY_AUTH_FILE,
//	$DOCKER_CONFIG/config.json or ~/.docker/config.json,
//	$XDG_RUNTIME_DIR/containers/auth.json, $XDG_CONFIG_HOME/containers/auth.json
func AuthFiles(authfile string) []string {
	var files []string
	add := func(f string) {
		if f != "" {
			files = append(files, f)
		}
	}
	add(authfile)
	add(os.Getenv("REGISTRY_AUTH_FILE"))
	add(filepath.Join(ConfigDir(), config.ConfigFileName))
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		add(filepath.Join(d, "containers", "auth.json"))
	}
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if home, err := os.UserHomeDir(); cfg == "" && err == nil {
		cfg = filepath.Join(home, ".config")
	}
	if cfg != "" {
		add(filepath.Join(cfg, "containers", "auth.json"))
	}
	return files
}

// fileKeychain finds credentials in docker config.json and containers auth.json files. Both
// have the same "auths" shape; docker's also name credential helpers, which are run as
// docker-credential-NAME.
type fileKeychain struct{ files []string }

// FileKeychain returns a keychain over files (see AuthFiles). Files that do not exist are
// skipped; a file that cannot be parsed is an error when it is consulted.
func FileKeychain(files ...string) authn.Keychain { return fileKeychain{files: files} }

// Resolve implements authn.Keychain.
func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	keys := []string{target.String(), target.RegistryStr()}
	for i, key := range keys {
		if key == name.DefaultRegistry {
			keys[i] = authn.DefaultAuthKey
		}
	}
	for _, f := range k.files {
		cf, err := loadAuthFile(f)
		if err != nil {
			return nil, err
		}
		if cf == nil {
			continue
		}
		for _, key := range keys {
			ac, err := cf.GetAuthConfig(key)
			if err != nil {
				return nil, fmt.Errorf("reading credentials for %s from %s: %w", key, f, err)
			}
			ac.ServerAddress = ""
			if ac != (types.AuthConfig{}) {
				return authn.FromConfig(authn.AuthConfig{
					Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
					IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
				}), nil
			}
		}
	}
	return authn.Anonymous, nil
}

// loadAuthFile parses one credential file; it returns nil when the file does not exist.
func loadAuthFile(path string) (*configfile.ConfigFile, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading credentials from %s: %w", path, err)
	}
	cf.Filename = path
	return cf, nil
}
