package registrytest_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker-credential-helpers/client"
	"github.com/docker/docker-credential-helpers/credentials"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-build/kiln/test/registrytest"
)

// pushPull pushes a random image to repo:tag on reg and pulls it back,
// checking the digest, and returns the first error.
func pushPull(t *testing.T, reg *registrytest.Registry, ref string, opts ...remote.Option) error {
	t.Helper()
	r := parseRef(t, reg, ref)
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		return err
	}
	return pullDigest(t, r, mustDigest(t, img), opts...)
}

func pullDigest(t *testing.T, r name.Reference, want v1.Hash, opts ...remote.Option) error {
	t.Helper()
	got, err := remote.Image(r, opts...)
	if err != nil {
		return err
	}
	if d := mustDigest(t, got); d != want {
		t.Fatalf("pulled %s from %s, pushed %s", d, r, want)
	}
	if _, err := got.ConfigFile(); err != nil {
		return err
	}
	return nil
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// parseRef parses "repo:tag" as a reference on reg, over HTTP when reg
// serves plain HTTP.
func parseRef(t *testing.T, reg *registrytest.Registry, ref string) name.Reference {
	t.Helper()
	var opts []name.Option
	if strings.HasPrefix(reg.URL(), "http://") {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(reg.Host+"/"+ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTLSHtpasswd(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{
		TLS:   true,
		Users: map[string]string{"kiln": "s3cret", "other": "pa ss:word"},
		Hosts: []string{"registry.kiln.test"},
	})
	if !strings.HasPrefix(r.URL(), "https://127.0.0.1:") {
		t.Errorf("URL = %s, want https on 127.0.0.1", r.URL())
	}
	tr := remote.WithTransport(r.Transport())
	for user, pass := range map[string]string{"kiln": "s3cret", "other": "pa ss:word"} {
		if err := pushPull(t, r, "kiln/app:"+user, tr, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
			t.Fatalf("push and pull as %s over verified TLS: %v", user, err)
		}
	}
	ref := parseRef(t, r, "kiln/app:kiln")
	_, err := remote.Image(ref, tr, remote.WithAuth(&authn.Basic{Username: "kiln", Password: "wrong"}))
	if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("pull with a wrong password: %v, want UNAUTHORIZED", err)
	}
	if _, err := remote.Image(ref, tr); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("anonymous pull: %v, want UNAUTHORIZED", err)
	}
	if _, err := remote.Image(ref); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull without trusting the CA: %v, want a certificate error", err)
	}

	roots := caPool(t, r.CAFile)
	for _, serverName := range []string{"registry.kiln.test", "localhost", "127.0.0.1"} {
		conn, err := tls.Dial("tcp", r.Host, &tls.Config{RootCAs: roots, ServerName: serverName})
		if err != nil {
			t.Errorf("TLS to the registry as %s: %v", serverName, err)
			continue
		}
		conn.Close()
	}

	certFile, keyFile := r.IssueCert(t, "proxy.kiln.test", "192.0.2.7")
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatalf("IssueCert wrote an unusable pair: %v", err)
	}
	cert := parseCert(t, certFile)
	for _, host := range []string{"proxy.kiln.test", "192.0.2.7", "localhost"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("issued certificate for %s: %v", host, err)
		}
	}
	second, _ := r.IssueCert(t, "other.kiln.test")
	if second == certFile {
		t.Errorf("IssueCert reused %s", certFile)
	}
}

func TestPlain(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	if r.CAFile != "" || !strings.HasPrefix(r.URL(), "http://") {
		t.Errorf("plain registry has CAFile %q, URL %s", r.CAFile, r.URL())
	}
	if err := pushPull(t, r, "plain/app:v1"); err != nil {
		t.Fatalf("anonymous push and pull over HTTP: %v", err)
	}
	if r.TokenScopes() != nil {
		t.Errorf("TokenScopes without a token server: %q", r.TokenScopes())
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "data", "docker", "registry", "v2", "repositories", "plain", "app")); err != nil {
		t.Errorf("the pushed repository is not in Dir/data: %v", err)
	}
	r.Stop()
	r.Stop()
	if resp, err := http.Get(r.URL() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("the registry still answers after Stop: %s", resp.Status)
	}
}

func TestToken(t *testing.T) {
	users := map[string]string{"alice": "wonder land", "bob": "builder"}
	r := registrytest.Start(t, registrytest.Options{TLS: true, Token: true, Users: users})
	tr := remote.WithTransport(r.Transport())
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: users["alice"]})
	if err := pushPull(t, r, "token/app:v1", tr, alice); err != nil {
		t.Fatalf("push and pull with token auth: %v", err)
	}
	scopes := r.TokenScopes()
	for _, want := range []string{"repository:token/app:push,pull", "repository:token/app:pull"} {
		if !slices.Contains(scopes, want) {
			t.Errorf("TokenScopes = %q, want %q among them", scopes, want)
		}
	}
	ref := parseRef(t, r, "token/app:v1")
	_, err := remote.Image(ref, tr, remote.WithAuth(&authn.Basic{Username: "alice", Password: "wrong"}))
	if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED: authentication failed") {
		t.Errorf("pull with a wrong password: %v, want the token server's 401", err)
	}
	_, err = remote.Image(ref, tr)
	if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("anonymous pull: %v, want the registry's UNAUTHORIZED", err)
	}
	if got := r.TokenScopes(); len(got) <= len(scopes) || got[len(got)-1] != "repository:token/app:pull" {
		t.Errorf("TokenScopes after the refused pulls = %q", got)
	}

	t.Run("protocol", func(t *testing.T) {
		testTokenProtocol(t, r, "bob", users["bob"])
	})
	t.Run("plain HTTP", func(t *testing.T) {
		r := registrytest.Start(t, registrytest.Options{Token: true, Users: users, Addr: "127.0.0.3:0"})
		bob := remote.WithAuth(&authn.Basic{Username: "bob", Password: users["bob"]})
		if err := pushPull(t, r, "http/app:v1", bob); err != nil {
			t.Fatalf("push and pull with token auth over HTTP: %v", err)
		}
		if !slices.Contains(r.TokenScopes(), "repository:http/app:push,pull") {
			t.Errorf("TokenScopes = %q", r.TokenScopes())
		}
	})
}

// testTokenProtocol follows the token protocol by hand: challenge, token
// request, the token's header and claims, and the registry accepting it.
func testTokenProtocol(t *testing.T, r *registrytest.Registry, user, pass string) {
	client := &http.Client{Transport: r.Transport()}
	resp, err := client.Get(r.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	challenge := resp.Header.Get("WWW-Authenticate")
	params := parseChallenge(t, challenge)
	if resp.StatusCode != http.StatusUnauthorized || params["realm"] == "" || params["service"] == "" {
		t.Fatalf("GET /v2/: %s, WWW-Authenticate %q", resp.Status, challenge)
	}
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Scheme != "https" || realm.Hostname() != "localhost" {
		t.Errorf("realm %q: want https on localhost (%v)", params["realm"], err)
	}

	getToken := func(user, pass string, scopes ...string) (*http.Response, map[string]any) {
		t.Helper()
		q := url.Values{"service": {params["service"]}, "scope": scopes}
		req, _ := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("token response: %v", err)
		}
		return resp, body
	}

	resp, body := getToken(user, pass, "repository:token/app:pull", "repository:token/other:pull,push")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token request: %s %v", resp.Status, body)
	}
	token, _ := body["token"].(string)
	if token == "" || body["access_token"] != token || body["expires_in"] != float64(300) || body["issued_at"] == nil {
		t.Errorf("token response %v", body)
	}
	header, claims := decodeJWT(t, token)
	if header["alg"] != "ES256" {
		t.Errorf("JWT header %v, want alg ES256", header)
	}
	if x5c, _ := header["x5c"].([]any); len(x5c) == 0 {
		t.Errorf("JWT header %v has no x5c chain", header)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"} {
		if claims[k] == nil || claims[k] == "" {
			t.Errorf("JWT claim %s missing: %v", k, claims)
		}
	}
	if claims["sub"] != user || claims["aud"] != params["service"] {
		t.Errorf("JWT claims %v: want sub %s, aud %s", claims, user, params["service"])
	}
	access, _ := json.Marshal(claims["access"])
	wantAccess := `[{"actions":["pull"],"name":"token/app","type":"repository"},{"actions":["pull","push"],"name":"token/other","type":"repository"}]`
	if string(access) != wantAccess {
		t.Errorf("access claim %s, want %s", access, wantAccess)
	}
	manifest := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/token/app/manifests/v1", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := manifest(token); code != http.StatusOK {
		t.Errorf("the registry answers %d to a manifest GET with the token, want 200", code)
	}
	// The registry checks the signature: the same signature over other claims fails.
	parts := strings.Split(token, ".")
	claims["sub"] = "mallory"
	forged, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(forged)
	if code := manifest(strings.Join(parts, ".")); code != http.StatusUnauthorized {
		t.Errorf("the registry answers %d to a manifest GET with a forged token, want 401", code)
	}

	resp, body = getToken("", "", "repository:token/app:pull")
	anonymous, _ := body["token"].(string)
	if resp.StatusCode != http.StatusOK || anonymous == "" {
		t.Fatalf("anonymous token request: %s %v", resp.Status, body)
	}
	if _, claims := decodeJWT(t, anonymous); claims["sub"] != "" || len(claims["access"].([]any)) != 0 {
		t.Errorf("anonymous token claims %v, want no subject and no access", claims)
	}
	if code := manifest(anonymous); code != http.StatusUnauthorized {
		t.Errorf("the registry answers %d to a manifest GET with an anonymous token, want 401", code)
	}
	if resp, body := getToken(user, "wrong", "repository:token/app:pull"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token request with a wrong password: %s %v, want 401", resp.Status, body)
	}
	if resp, body := getToken("nobody", pass, "repository:token/app:pull"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token request as an unknown user: %s %v, want 401", resp.Status, body)
	}
	if resp, body := getToken(user, pass, "repository-without-actions"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("token request with a malformed scope: %s %v, want 400", resp.Status, body)
	}
}

// parseChallenge parses `Bearer k="v",k2="v2"` (values may hold commas).
func parseChallenge(t *testing.T, h string) map[string]string {
	t.Helper()
	rest, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		t.Fatalf("challenge %q is not Bearer", h)
	}
	params := map[string]string{}
	for rest != "" {
		key, after, ok := strings.Cut(rest, `="`)
		value, tail, ok2 := strings.Cut(after, `"`)
		if !ok || !ok2 {
			t.Fatalf("malformed challenge %q", h)
		}
		params[strings.TrimSpace(key)] = value
		rest = strings.TrimPrefix(tail, ",")
	}
	return params
}

func decodeJWT(t *testing.T, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", token)
	}
	for i, into := range []*map[string]any{&header, &claims} {
		data, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("JWT part %d: %v", i, err)
		}
		if err := json.Unmarshal(data, into); err != nil {
			t.Fatalf("JWT part %d: %v", i, err)
		}
	}
	if sig, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(sig) != 64 {
		t.Errorf("ES256 signature: %d bytes, %v; want 64", len(sig), err)
	}
	return header, claims
}

func TestClientCerts(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{TLS: true, ClientCerts: true, Addr: "127.0.0.2:0"})
	if !strings.HasPrefix(r.Host, "127.0.0.2:") {
		t.Errorf("Host = %s, want it on 127.0.0.2", r.Host)
	}
	noCert := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, r.CAFile)}}
	err := pushPull(t, r, "mtls/app:v1", remote.WithTransport(noCert), remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	if err == nil {
		t.Fatal("push without a client certificate succeeded")
	}
	t.Logf("without a client certificate: %v", err)

	pair, err := tls.LoadX509KeyPair(r.ClientCert, r.ClientKey)
	if err != nil {
		t.Fatalf("loading the client certificate: %v", err)
	}
	withCert := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(t, r.CAFile), Certificates: []tls.Certificate{pair}}}
	if err := pushPull(t, r, "mtls/app:v1", remote.WithTransport(withCert)); err != nil {
		t.Fatalf("push and pull with the client certificate: %v", err)
	}
	if err := pushPull(t, r, "mtls/app:v2", remote.WithTransport(r.Transport())); err != nil {
		t.Fatalf("push and pull with Transport(): %v", err)
	}
}

func TestCredHelper(t *testing.T) {
	dir := t.TempDir()
	bin := registrytest.BuildCredHelper(t, dir, "kiln-test")
	if filepath.Base(bin) != "docker-credential-kiln-test" {
		t.Errorf("BuildCredHelper = %s", bin)
	}
	store := filepath.Join(dir, "creds", "store.json")
	os.Mkdir(filepath.Dir(store), 0o700)
	t.Setenv(registrytest.CredHelperFileEnv, store)
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	helper := client.NewShellProgramFunc(bin)

	if _, err := client.Get(helper, "registry.kiln.test"); !credentials.IsErrCredentialsNotFound(err) {
		t.Fatalf("get before any store: %v, want not found", err)
	}
	want := &credentials.Credentials{ServerURL: "registry.kiln.test:5000", Username: "kiln", Secret: "s3cret \"quoted\""}
	if err := client.Store(helper, want); err != nil {
		t.Fatalf("store: %v", err)
	}
	if err := client.Store(helper, &credentials.Credentials{ServerURL: "other.kiln.test", Username: "<token>", Secret: "identity"}); err != nil {
		t.Fatalf("store: %v", err)
	}
	if fi, err := os.Stat(store); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file: %v, %v; want mode 0600", fi, err)
	}
	got, err := client.Get(helper, want.ServerURL)
	if err != nil || *got != *want {
		t.Fatalf("get = %+v, %v; want %+v", got, err, want)
	}
	list, err := client.List(helper)
	if err != nil || len(list) != 2 || list[want.ServerURL] != "kiln" || list["other.kiln.test"] != "<token>" {
		t.Errorf("list = %v, %v", list, err)
	}
	if err := client.Store(helper, &credentials.Credentials{ServerURL: "x.kiln.test"}); err == nil || !credentials.IsCredentialsMissingUsername(errors.Unwrap(err)) && !strings.Contains(err.Error(), "no credentials username") {
		t.Errorf("store without a username: %v", err)
	}

	// A client that reads docker's config.json finds the credentials through the helper.
	config := t.TempDir()
	os.WriteFile(filepath.Join(config, "config.json"), []byte(`{"credHelpers":{"registry.kiln.test:5000":"kiln-test"}}`), 0o600)
	t.Setenv("DOCKER_CONFIG", config)
	reg, err := name.NewRegistry("registry.kiln.test:5000")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		t.Fatalf("the default keychain with credHelpers: %v", err)
	}
	if cfg, err := auth.Authorization(); err != nil || cfg.Username != want.Username || cfg.Password != want.Secret {
		t.Errorf("the default keychain resolves %+v, %v", cfg, err)
	}

	if err := client.Erase(helper, want.ServerURL); err != nil {
		t.Fatalf("erase: %v", err)
	}
	if _, err := client.Get(helper, want.ServerURL); !credentials.IsErrCredentialsNotFound(err) {
		t.Errorf("get after erase: %v, want not found", err)
	}
	if err := client.Erase(helper, want.ServerURL); err == nil {
		t.Error("a second erase succeeded")
	}

	// The raw protocol: a miss prints the message on stdout and exits 1.
	cmd := exec.Command(bin, "get")
	cmd.Stdin = strings.NewReader("missing.kiln.test\n")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err == nil || strings.TrimSpace(stdout.String()) != "credentials not found in native keychain" {
		t.Errorf("get of a missing server: %v, stdout %q", err, stdout.String())
	}
	cmd = exec.Command(bin, "list")
	cmd.Env = append(os.Environ(), registrytest.CredHelperFileEnv+"=")
	if out, err := cmd.Output(); err == nil || !strings.Contains(string(out), registrytest.CredHelperFileEnv) {
		t.Errorf("list without %s: %v, %q", registrytest.CredHelperFileEnv, err, out)
	}
}

func TestFreeAddrAndWaitReady(t *testing.T) {
	addr := registrytest.FreeAddr(t, "")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("FreeAddr = %s", addr)
	}
	r := registrytest.Start(t, registrytest.Options{TLS: true})
	registrytest.WaitReady(t, &http.Client{Transport: r.Transport()}, r.URL()+"/v2/")
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s holds no certificate", file)
	}
	return pool
}

func parseCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
