package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// authRegistry starts Debian's docker-registry with htpasswd auth over TLS (a self-signed
// certificate) on a free loopback port and returns its host:port.
func authRegistry(t *testing.T, user, pass string) string {
	t.Helper()
	bin := needTool(t, "docker-registry")
	htpasswd := needTool(t, "htpasswd")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	out, err := exec.Command(htpasswd, "-Bbn", user, pass).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("htpasswd", out)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kiln-e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	write("config.yml", []byte(fmt.Sprintf(`version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: %[1]s/data}}
http: {addr: %[2]s, tls: {certificate: %[1]s/cert.pem, key: %[1]s/key.pem}}
auth: {htpasswd: {realm: kiln-e2e, path: %[1]s/htpasswd}}
`, dir, host)))
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	for i := 0; i < 100; i++ {
		if resp, err := client.Get("https://" + host + "/v2/"); err == nil {
			resp.Body.Close()
			return host
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("docker-registry did not start on %s", host)
	return ""
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
