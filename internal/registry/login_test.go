package registry

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// TestLogin logs in to the real registry (htpasswd over TLS), stores the credentials the way
// `docker login` does, pulls and pushes with nothing but the default keychain reading them,
// then logs out.
func TestLogin(t *testing.T) {
	d := startDistribution(t)
	ctx := context.Background()
	c := newTestClient(t, WithInsecure(d.host))
	if err := c.Login(ctx, d.host, d.user, "wrong"); err == nil || !strings.Contains(err.Error(), d.host) {
		t.Fatalf("login with a wrong password: %v, want an error naming %s", err, d.host)
	}
	if err := c.Login(ctx, d.host, d.user, d.pass); err != nil {
		t.Fatalf("login: %v", err)
	}

	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	if got := ConfigDir(); got != dir {
		t.Fatalf("ConfigDir = %s with DOCKER_CONFIG set, want %s", got, dir)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"auths":{"other.example":{"auth":"eDp5"}},"psFormat":"keep me"}`), 0o600)
	if err := SaveLogin(dir, d.host, d.user, d.pass); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(data, &cfg); err != nil || cfg["psFormat"] != "keep me" {
		t.Fatalf("config.json lost what it held: %s (%v)", data, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "config.json")); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("config.json is readable by others: %v", fi.Mode())
	}
	reg, _ := name.NewRegistry(d.host)
	auth, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil || auth == authn.Anonymous {
		t.Fatalf("the default keychain does not find the saved login: %v", err)
	}
	logged := newTestClient(t, WithInsecure(d.host)) // default keychain
	img, _ := random.Image(512, 1)
	ref := d.host + "/kiln/login:v1"
	if err := logged.Push(ctx, img, ref); err != nil {
		t.Fatalf("push with the saved login: %v", err)
	}
	if err := RemoveLogin(dir, d.host); err != nil {
		t.Fatal(err)
	}
	if err := RemoveLogin(dir, d.host); err == nil {
		t.Error("a second logout succeeded")
	}
	if _, err := newTestClient(t, WithInsecure(d.host)).Digest(ctx, ref); err == nil {
		t.Error("the registry still answered after logout")
	}
}
