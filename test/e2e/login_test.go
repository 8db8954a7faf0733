package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/test/registrytest"
)

// authRegistry starts Debian's docker-registry with htpasswd auth over TLS on a free loopback
// port and returns its host:port. Clients reach it with --insecure-registry: nothing trusts its CA.
func authRegistry(t *testing.T, user, pass string) string {
	t.Helper()
	needTool(t, "docker-registry")
	needTool(t, "htpasswd")
	r := registrytest.Start(t, registrytest.Options{TLS: true, Users: map[string]string{user: pass}})
	// Without credentials it must refuse, or the failed login below would prove nothing.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	resp, err := client.Get(r.URL() + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/ on the auth registry: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ without credentials on the auth registry: %s, want 401", resp.Status)
	}
	return r.Host
}

// TestLoginPushLogout logs in as an unprivileged user, pushes with the saved credentials
// (read inside kiln's user namespace from the user's ~/.docker/config.json), and logs out.
func TestLoginPushLogout(t *testing.T) {
	needKiln(t)
	needRoot(t)
	needRegistry(t)
	const user, pass = "kiln", "e2e-s3cret"
	host := authRegistry(t, user, pass)
	u := SubUser
	home := u.lookup(t).home
	t.Cleanup(func() { os.RemoveAll(filepath.Join(home, ".docker")) })
	os.RemoveAll(filepath.Join(home, ".docker"))
	login := func(password string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := u.command(ctx, t, "/", nil, needKiln(t), "login", "--insecure-registry", host, "-u", user, "--password-stdin", host)
		cmd.Stdin = strings.NewReader(password + "\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := login("wrong"); err == nil || !strings.Contains(out, host) {
		t.Fatalf("login with a wrong password: %v\n%s", err, out)
	}
	if out, err := login(pass); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("login: %v\n%s", err, out)
	}
	ref := host + "/e2e/auth:v1"
	ctxDir := helloContext(t, u)
	if _, stderr, err := runKiln(t, u, "build", "-t", ref, "--push", "--insecure-registry", host, ctxDir); err != nil {
		t.Fatalf("push with the saved login: %v\n%s", err, tail(stderr, 10))
	}
	digest := mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--creds", user+":"+pass, "--format", "{{.Digest}}", "docker://"+ref)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("skopeo does not find the pushed image: %q", digest)
	}
	if stdout, stderr, err := runKiln(t, u, "logout", host); err != nil {
		t.Fatalf("logout: %v\n%s%s", err, stdout, stderr)
	}
	_, stderr, err := runKiln(t, u, "build", "-t", host+"/e2e/auth:v2", "--push", "--insecure-registry", host, ctxDir)
	if err == nil || !strings.Contains(stderr, host) {
		t.Errorf("a push after logout: %v, want an error naming %s\n%s", err, host, tail(stderr, 5))
	}
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
