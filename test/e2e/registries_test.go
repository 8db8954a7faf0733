package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-build/kiln/test/faultproxy"
	"github.com/kiln-build/kiln/test/registrytest"
)

// The registry suite runs kiln as an unprivileged user against Debian's docker-registry,
// started here twice: with htpasswd auth over TLS (a CA generated for the test), and plain,
// as an insecure registry on a non-loopback address.

const regUser, regPass = "kiln", "e2e-s3cret"

// testRegistry is a registry and how kiln and skopeo reach it.
type testRegistry struct {
	*registrytest.Registry
	mode string
	// flags make kiln trust the registry: --registry-ca or --insecure-registry.
	flags []string
	// auth is whether the registry wants credentials (regUser, regPass).
	auth bool
}

// skopeoArgs are skopeo's flags to reach r.
func (r testRegistry) skopeoArgs() []string {
	args := []string{"--tls-verify=false"}
	if r.auth {
		args = append(args, "--creds", regUser+":"+regPass)
	}
	return args
}

// rootlessUser checks what the registry and cache suites need and returns the user they
// build as: an unprivileged one with subuid ranges.
func rootlessUser(t *testing.T) User {
	t.Helper()
	needKiln(t)
	needRoot(t)
	needRegistry(t)
	return SubUser
}

// startRegistries starts the two registries of the suite for u.
func startRegistries(t *testing.T, u User) []testRegistry {
	t.Helper()
	tlsReg := registrytest.Start(t, registrytest.Options{TLS: true, Users: map[string]string{regUser: regPass}})
	plain := registrytest.Start(t, registrytest.Options{Addr: net.JoinHostPort(nonLoopbackIP(t), "0")})
	return []testRegistry{
		{Registry: tlsReg, mode: "tls-htpasswd", auth: true,
			flags: []string{"--registry-ca", tlsReg.Host + "=" + userFile(t, u, tlsReg.CAFile)}},
		{Registry: plain, mode: "plain", flags: []string{"--insecure-registry", plain.Host}},
	}
}

// nonLoopbackIP is an IPv4 address of this machine that is not loopback, so that kiln does
// not treat a registry there as local (which may speak plain HTTP without being named).
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP.String()
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address for the plain registry")
	return ""
}

// userFile copies src into a directory of u's and returns the copy's path.
func userFile(t *testing.T, u User, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(userDir(t, u, "files"), filepath.Base(src))
	writeUserFile(t, u, dst, string(data))
	return dst
}

// writeUserFile writes content to path, owned by u.
func writeUserFile(t *testing.T, u User, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	a := u.lookup(t)
	if err := os.Chown(path, a.uid, a.gid); err != nil {
		t.Fatal(err)
	}
}

// dockerConfig writes a docker config.json for u and returns the DOCKER_CONFIG environment
// variable that points kiln at it.
func dockerConfig(t *testing.T, u User, content string) string {
	t.Helper()
	dir, err := os.MkdirTemp(userDir(t, u, "docker-config"), "")
	if err != nil {
		t.Fatal(err)
	}
	a := u.lookup(t)
	if err := os.Chown(dir, a.uid, a.gid); err != nil {
		t.Fatal(err)
	}
	writeUserFile(t, u, filepath.Join(dir, "config.json"), content)
	return "DOCKER_CONFIG=" + dir
}

// authsConfig is a config.json with user:pass for each host.
func authsConfig(user, pass string, hosts ...string) string {
	var entries []string
	for _, h := range hosts {
		entries = append(entries, fmt.Sprintf("%q:{\"auth\":%q}", h, base64.StdEncoding.EncodeToString([]byte(user+":"+pass))))
	}
	return `{"auths":{` + strings.Join(entries, ",") + `}}`
}

// layeredContext is a build context whose image has three layers of random bytes on the
// fixture busybox, so that pushes and pulls move several sizeable blobs.
func layeredContext(t *testing.T, u User) string {
	t.Helper()
	dir := userDir(t, u, "layered")
	writeUserFile(t, u, filepath.Join(dir, "Dockerfile"), `FROM localhost:5000/busybox:latest
RUN head -c 300000 /dev/urandom > /one
RUN head -c 300000 /dev/urandom > /two
RUN head -c 300000 /dev/urandom > /three
`)
	return dir
}

// fromContext is a build context FROM ref.
func fromContext(t *testing.T, u User, ref string) string {
	t.Helper()
	dir := userDir(t, u, "from")
	writeUserFile(t, u, filepath.Join(dir, "Dockerfile"), "FROM "+ref+"\nRUN cat /one /two /three | wc -c\n")
	return dir
}

// builtDigest is the digest kiln printed last on stdout.
func builtDigest(t *testing.T, stdout string) string {
	t.Helper()
	lines := strings.Fields(stdout)
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "sha256:") {
		t.Fatalf("kiln printed no digest: %q", stdout)
	}
	return lines[len(lines)-1]
}

// skopeoDigest is the digest skopeo reads for ref, or "" when the registry does not have it.
func skopeoDigest(t *testing.T, r testRegistry, ref string) string {
	t.Helper()
	args := append(append([]string{"inspect"}, r.skopeoArgs()...), "--format", "{{.Digest}}", "docker://"+ref)
	out, err := exec.Command(needTool(t, "skopeo"), args...).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "manifest unknown") || strings.Contains(string(out), "name unknown") {
			return ""
		}
		t.Fatalf("skopeo inspect %s: %v\n%s", ref, err, out)
	}
	return strings.TrimSpace(string(out))
}

// checkComplete copies ref out of the registry with skopeo, which fetches and verifies every
// blob its manifest names: a tag must never point at an incomplete image.
func checkComplete(t *testing.T, r testRegistry, ref string) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	args := append(append([]string{"copy", "--src-tls-verify=false"}, srcCreds(r)...), "docker://"+ref, "oci:"+dst+":x")
	if out, err := exec.Command(needTool(t, "skopeo"), args...).CombinedOutput(); err != nil {
		t.Fatalf("%s is incomplete in the registry: skopeo copy: %v\n%s", ref, err, out)
	}
}

func srcCreds(r testRegistry) []string {
	if r.auth {
		return []string{"--src-creds", regUser + ":" + regPass}
	}
	return nil
}

// TestRegistries pushes and pulls as an unprivileged user against both registries, with
// credentials from a config.json, from a credential helper and from kiln login.
func TestRegistries(t *testing.T) {
	u := rootlessUser(t)
	for _, r := range startRegistries(t, u) {
		t.Run(r.mode, func(t *testing.T) {
			ctxDir := layeredContext(t, u)
			pushAndPull := func(t *testing.T, repo string, env []string) {
				t.Helper()
				ref := r.Host + "/e2e/" + repo + ":v1"
				args := append([]string{"build", "-t", ref, "--push"}, r.flags...)
				stdout, stderr, err := runKilnEnv(t, u, "/", env, append(args, ctxDir)...)
				if err != nil {
					t.Fatalf("push: %v\n%s", err, tail(stderr, 10))
				}
				if got, want := skopeoDigest(t, r, ref), builtDigest(t, stdout); got != want {
					t.Fatalf("the registry has %s for %s, kiln built %s", got, ref, want)
				}
				if warned := strings.Contains(stderr, "registry "+r.Host+" is insecure"); warned != !r.auth {
					t.Errorf("warning about an insecure registry: %v, want %v\n%s", warned, !r.auth, tail(stderr, 10))
				}
				checkComplete(t, r, ref)
				// Pull it back into an empty store.
				args = append([]string{"build", "--root", userDir(t, u, "pull-store")}, r.flags...)
				_, stderr, err = runKilnEnv(t, u, "/", env, append(args, fromContext(t, u, ref))...)
				if err != nil || !strings.Contains(stderr, "900000") {
					t.Fatalf("pulling %s back: %v\n%s", ref, err, tail(stderr, 10))
				}
			}
			if !r.auth {
				pushAndPull(t, "plain", nil)
				return
			}
			t.Run("config.json", func(t *testing.T) {
				pushAndPull(t, "config", []string{dockerConfig(t, u, authsConfig(regUser, regPass, r.Host))})
			})
			// credHelperEnv builds the test credential helper for u and returns the
			// environment that puts it on PATH, with its store file and config.json.
			credHelperEnv := func(t *testing.T, config string) ([]string, string) {
				bin := userDir(t, u, "bin")
				helper := registrytest.BuildCredHelper(t, bin, "kilntest")
				os.Chmod(helper, 0o755)
				store := filepath.Join(userDir(t, u, "creds"), "creds.json")
				return []string{
					"PATH=" + bin + ":/usr/local/bin:/usr/bin:/bin",
					registrytest.CredHelperFileEnv + "=" + store,
					dockerConfig(t, u, config),
				}, helper
			}
			t.Run("credential-helper", func(t *testing.T) {
				env, helper := credHelperEnv(t, fmt.Sprintf(`{"credHelpers":{%q:"kilntest"}}`, r.Host))
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := u.command(ctx, t, "/", env, helper, "store")
				cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"ServerURL":%q,"Username":%q,"Secret":%q}`, r.Host, regUser, regPass))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("storing credentials in the helper: %v\n%s", err, out)
				}
				pushAndPull(t, "helper", env)
			})
			t.Run("login-credsStore", func(t *testing.T) {
				env, _ := credHelperEnv(t, `{"credsStore":"kilntest"}`)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				args := append(append([]string{"login"}, r.flags...), "-u", regUser, "--password-stdin", r.Host)
				cmd := u.command(ctx, t, "/", env, needKiln(t), args...)
				cmd.Stdin = strings.NewReader(regPass + "\n")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("login through credsStore: %v\n%s", err, out)
				}
				store := strings.TrimPrefix(env[1], registrytest.CredHelperFileEnv+"=")
				if data, err := os.ReadFile(store); err != nil || !strings.Contains(string(data), regPass) {
					t.Fatalf("the helper did not receive the credentials: %v\n%s", err, data)
				}
				pushAndPull(t, "credsstore", env)
			})
			t.Run("login", func(t *testing.T) {
				env := []string{dockerConfig(t, u, "{}")}
				login := func(password string) (string, error) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					args := append(append([]string{"login"}, r.flags...), "-u", regUser, "--password-stdin", r.Host)
					cmd := u.command(ctx, t, "/", env, needKiln(t), args...)
					cmd.Stdin = strings.NewReader(password + "\n")
					out, err := cmd.CombinedOutput()
					return string(out), err
				}
				if out, err := login("wrong"); err == nil || !strings.Contains(out, r.Host) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
					t.Fatalf("login with a wrong password: %v, want one line naming %s:\n%s", err, r.Host, out)
				}
				if out, err := login(regPass); err != nil || !strings.Contains(out, "Login Succeeded") {
					t.Fatalf("login: %v\n%s", err, out)
				}
				pushAndPull(t, "login", env)
				if _, stderr, err := runKilnEnv(t, u, "/", env, "logout", r.Host); err != nil {
					t.Fatalf("logout: %v\n%s", err, stderr)
				}
				args := append([]string{"build", "-t", r.Host + "/e2e/login:v2", "--push"}, r.flags...)
				_, stderr, err := runKilnEnv(t, u, "/", env, append(args, ctxDir)...)
				if err == nil || !strings.Contains(stderr, "kiln login "+r.Host) {
					t.Fatalf("a push after logout: %v, want an error saying to log in\n%s", err, tail(stderr, 5))
				}
			})
		})
	}
}

// lastError is kiln's error line: it must be the only one, and one line.
func lastError(t *testing.T, stderr string) string {
	t.Helper()
	var errs []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "kiln: error:") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 {
		t.Fatalf("want one error line, got %d:\n%s", len(errs), tail(stderr, 20))
	}
	return errs[0]
}

// TestRegistryErrors checks that the common registry mistakes each give one line that names
// the registry and the fix.
func TestRegistryErrors(t *testing.T) {
	u := rootlessUser(t)
	regs := startRegistries(t, u)
	tlsReg, plain := regs[0], regs[1]
	ctxDir := layeredContext(t, u)
	creds := dockerConfig(t, u, authsConfig(regUser, regPass, tlsReg.Host))
	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"bad password", []string{dockerConfig(t, u, authsConfig(regUser, "wrong", tlsReg.Host))},
			append([]string{"-t", tlsReg.Host + "/e2e/x:v1", "--push"}, tlsReg.flags...),
			[]string{tlsReg.Host, "401", "kiln login " + tlsReg.Host}},
		{"no credentials", []string{dockerConfig(t, u, "{}")},
			append([]string{"-t", tlsReg.Host + "/e2e/x:v1", "--push"}, tlsReg.flags...),
			[]string{tlsReg.Host, "no credentials", "kiln login " + tlsReg.Host}},
		{"missing repository", []string{creds},
			append([]string{"-f", "-"}, tlsReg.flags...),
			[]string{tlsReg.Host + "/e2e/nothing:v1", "404", "check the repository name"}},
		{"unknown CA", []string{creds},
			[]string{"-t", tlsReg.Host + "/e2e/x:v1", "--push"},
			[]string{tlsReg.Host, "unknown authority", "--registry-ca " + tlsReg.Host + "="}},
		{"plain HTTP", nil,
			[]string{"-t", plain.Host + "/e2e/x:v1", "--push"},
			[]string{plain.Host, "plain HTTP", "--insecure-registry " + plain.Host}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"build"}, tc.args...)
			var stdin string
			if hasFlag(tc.args, "-f") {
				stdin = "FROM " + tlsReg.Host + "/e2e/nothing:v1\n"
			}
			start := time.Now()
			_, stderr, err := runKilnStdin(t, u, tc.env, stdin, append(args, ctxDir)...)
			if err == nil {
				t.Fatal("the build succeeded")
			}
			line := lastError(t, stderr)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("error %q does not mention %q", line, w)
				}
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("a permanent error took %s (retried?)", d)
			}
			if strings.Contains(stderr, "[stage") && hasFlag(tc.args, "--push") {
				t.Errorf("the build ran before the push check failed:\n%s", tail(stderr, 10))
			}
		})
	}
}

// runKilnStdin is runKilnEnv in / with stdin.
func runKilnStdin(t *testing.T, u User, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if stdin == "" {
		return runKilnEnv(t, u, "/", env, args...)
	}
	if len(args) > 0 && args[0] == "build" && !hasFlag(args, "--root") {
		args = append([]string{args[0], "--root", storeDir(t, u)}, args[1:]...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := u.command(ctx, t, "/", env, needKiln(t), args...)
	var out, errb strings.Builder
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err = cmd.Run()
	t.Logf("kiln %s as %s: err=%v\n%s", strings.Join(args, " "), u, err, tail(errb.String(), 20))
	return out.String(), errb.String(), err
}

// seedImage copies the busybox fixture to ref with skopeo.
func seedImage(t *testing.T, ref string, destArgs ...string) {
	t.Helper()
	args := append(append([]string{"copy", "--src-tls-verify=false"}, destArgs...), "docker://localhost:5000/busybox:latest", "docker://"+ref)
	if out, err := exec.Command(needTool(t, "skopeo"), args...).CombinedOutput(); err != nil {
		t.Fatalf("seeding %s: %v\n%s", ref, err, out)
	}
}

// TestRegistryMirrors pulls through mirrors, given by flag and by registries.toml, while the
// origin is down.
func TestRegistryMirrors(t *testing.T) {
	u := rootlessUser(t)
	origin := registrytest.Start(t, registrytest.Options{})
	mirror := registrytest.Start(t, registrytest.Options{})
	seedImage(t, mirror.Host+"/cache/e2e/base:v1", "--dest-tls-verify=false")
	origin.Stop()
	ref := origin.Host + "/e2e/base:v1"
	ctxDir := userDir(t, u, "ctx")
	writeUserFile(t, u, filepath.Join(ctxDir, "Dockerfile"), "FROM "+ref+"\nRUN echo pulled-from-mirror\n")

	t.Run("flag", func(t *testing.T) {
		_, stderr, err := runKiln(t, u, "build", "--registry-mirror", origin.Host+"="+mirror.Host+"/cache", ctxDir)
		if err != nil || !strings.Contains(stderr, "pulled-from-mirror") {
			t.Fatalf("build through the mirror: %v\n%s", err, tail(stderr, 10))
		}
	})
	t.Run("registries.toml", func(t *testing.T) {
		conf := fmt.Sprintf("[[registry]]\nprefix = %q\n[[registry.mirror]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\n",
			origin.Host+"/e2e", "127.0.0.1:1/nowhere", mirror.Host+"/cache/e2e")
		xdg := userDir(t, u, "xdg")
		os.MkdirAll(filepath.Join(xdg, "kiln"), 0o755)
		a := u.lookup(t)
		os.Chown(filepath.Join(xdg, "kiln"), a.uid, a.gid)
		writeUserFile(t, u, filepath.Join(xdg, "kiln", "registries.toml"), conf)
		_, stderr, err := runKilnEnv(t, u, "/", []string{"XDG_CONFIG_HOME=" + xdg}, "build", "--retry", "0", ctxDir)
		if err != nil || !strings.Contains(stderr, "pulled-from-mirror") {
			t.Fatalf("build through registries.toml's second mirror: %v\n%s", err, tail(stderr, 10))
		}
		if !strings.Contains(stderr, "127.0.0.1:1") {
			t.Errorf("no warning about the dead mirror:\n%s", tail(stderr, 10))
		}
	})
	t.Run("origin down, no mirror", func(t *testing.T) {
		_, stderr, err := runKiln(t, u, "build", "--retry", "1", "--retry-delay", "10ms", ctxDir)
		if err == nil {
			t.Fatal("built without the origin")
		}
		if line := lastError(t, stderr); !strings.Contains(line, origin.Host) {
			t.Fatalf("error does not name the origin: %s", line)
		}
	})
}

// TestRegistryClientCert pushes to a registry that wants a client certificate.
func TestRegistryClientCert(t *testing.T) {
	u := rootlessUser(t)
	r := registrytest.Start(t, registrytest.Options{TLS: true, ClientCerts: true})
	ca := "--registry-ca=" + r.Host + "=" + userFile(t, u, r.CAFile)
	cert := "--registry-client-cert=" + r.Host + "=" + userFile(t, u, r.ClientCert) + "," + userFile(t, u, r.ClientKey)
	ctxDir := layeredContext(t, u)
	_, stderr, err := runKiln(t, u, "build", "-t", r.Host+"/e2e/mtls:v1", "--push", ca, ctxDir)
	if err == nil || !strings.Contains(lastError(t, stderr), "--registry-client-cert "+r.Host+"=") {
		t.Fatalf("push without a client certificate: %v\n%s", err, tail(stderr, 5))
	}
	if _, stderr, err := runKiln(t, u, "build", "-t", r.Host+"/e2e/mtls:v1", "--push", ca, cert, ctxDir); err != nil {
		t.Fatalf("push with a client certificate: %v\n%s", err, tail(stderr, 10))
	}
}

// TestRegistryToken pushes to two repositories of a registry with bearer-token auth: kiln asks
// for push scopes, and for the second repository also for pull on the first, to mount its
// blobs instead of uploading them.
func TestRegistryToken(t *testing.T) {
	u := rootlessUser(t)
	r := registrytest.Start(t, registrytest.Options{TLS: true, Token: true, Users: map[string]string{regUser: regPass}})
	realm := tokenRealmHost(t, r)
	caFile := userFile(t, u, r.CAFile)
	env := []string{dockerConfig(t, u, authsConfig(regUser, regPass, r.Host))}
	ctxDir := layeredContext(t, u)
	_, stderr, err := runKilnEnv(t, u, "/", env, "build", "-t", r.Host+"/e2e/one:v1", "--destination", r.Host+"/e2e/two:v1",
		"--push", "--registry-ca", r.Host+"="+caFile, "--registry-ca", realm+"="+caFile, ctxDir)
	if err != nil {
		t.Fatalf("push with token auth: %v\n%s", err, tail(stderr, 10))
	}
	scopes := strings.Join(r.TokenScopes(), " ")
	for _, want := range []string{"repository:e2e/one:push,pull", "repository:e2e/two:push,pull", "repository:e2e/one:pull"} {
		if !strings.Contains(scopes, want) {
			t.Errorf("no token asked for %s; asked: %s", want, scopes)
		}
	}
}

// tokenRealmHost is the host:port of r's token server, read from its challenge.
func tokenRealmHost(t *testing.T, r *registrytest.Registry) string {
	t.Helper()
	resp, err := (&http.Client{Transport: r.Transport()}).Get(r.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	challenge := resp.Header.Get("WWW-Authenticate")
	_, rest, ok := strings.Cut(challenge, `realm="`)
	realm, _, _ := strings.Cut(rest, `"`)
	u, err := url.Parse(realm)
	if !ok || err != nil {
		t.Fatalf("no realm in %q", challenge)
	}
	return u.Host
}

// faultyRegistry is the TLS registry behind a fault-injecting proxy, and the flags and
// environment that make kiln use the proxy.
func faultyRegistry(t *testing.T, u User) (testRegistry, *faultproxy.Proxy, []string, []string) {
	t.Helper()
	r := startRegistries(t, u)[0]
	cert, key := r.IssueCert(t, "127.0.0.1")
	upstream, _ := url.Parse(r.URL())
	p := faultproxy.New(t, upstream, faultproxy.Options{CertFile: cert, KeyFile: key, UpstreamTransport: r.Transport()})
	flags := []string{"--registry-ca", p.Host() + "=" + userFile(t, u, r.CAFile),
		"--retry", "4", "--retry-delay", "200ms", "--registry-timeout", "3s"}
	env := []string{dockerConfig(t, u, authsConfig(regUser, regPass, p.Host(), r.Host))}
	return r, p, flags, env
}

// TestRegistryFaults pushes and pulls a multi-layer image through transient faults, and
// checks that permanent faults fail within the retry budget without leaving a tag that
// points at an incomplete image.
func TestRegistryFaults(t *testing.T) {
	u := rootlessUser(t)
	r, p, flags, env := faultyRegistry(t, u)
	ctxDir := layeredContext(t, u)
	ref := p.Host() + "/e2e/faults:v1"
	direct := r.Host + "/e2e/faults:v1"
	build := func(t *testing.T, args ...string) (string, string, error) {
		t.Helper()
		return runKilnEnv(t, u, "/", env, append(append([]string{"build"}, flags...), args...)...)
	}
	applied := func(t *testing.T, names ...string) {
		t.Helper()
		for _, n := range names {
			if p.CountFault(n) == 0 {
				t.Errorf("fault %s never happened", n)
			}
		}
	}

	t.Run("transient push", func(t *testing.T) {
		p.Clear()
		p.Add(faultproxy.Rule{Name: "upload-503", Method: "POST", Path: `/blobs/uploads/$`, Times: 2, Kind: faultproxy.Status, Status: 503})
		p.Add(faultproxy.Rule{Name: "head-reset", Method: "HEAD", Path: `/blobs/sha256:`, Times: 2, Kind: faultproxy.Reset})
		p.Add(faultproxy.Rule{Name: "patch-cut", Method: "PATCH", Path: `/blobs/uploads/`, Times: 1, Kind: faultproxy.DropRequestBody, Bytes: 100_000})
		p.Add(faultproxy.Rule{Name: "put-500", Method: "PUT", Path: `/blobs/uploads/`, Times: 1, Kind: faultproxy.Status, Status: 500})
		p.Add(faultproxy.Rule{Name: "manifest-429", Method: "PUT", Path: `/manifests/`, Times: 1, Kind: faultproxy.Status, Status: 429, RetryAfter: time.Second})
		stdout, stderr, err := build(t, "-t", ref, "--push", ctxDir)
		if err != nil {
			t.Fatalf("push through transient faults: %v\n%s", err, tail(stderr, 20))
		}
		applied(t, "upload-503", "head-reset", "patch-cut", "put-500", "manifest-429")
		if got, want := skopeoDigest(t, r, direct), builtDigest(t, stdout); got != want {
			t.Fatalf("the registry has %q, kiln built %s", got, want)
		}
		checkComplete(t, r, direct)
	})

	t.Run("transient pull", func(t *testing.T) {
		p.Clear()
		p.Add(faultproxy.Rule{Name: "manifest-503", Method: "GET", Path: `/manifests/`, Times: 1, Kind: faultproxy.Status, Status: 503})
		p.Add(faultproxy.Rule{Name: "config-cut", Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: faultproxy.DropResponseBody, Bytes: 100})
		// The config is fetched again, then the layers: cut two and stall one part-way.
		p.Add(faultproxy.Rule{Name: "layer-cut", Method: "GET", Path: `/blobs/sha256:`, After: 2, Times: 2, Kind: faultproxy.DropResponseBody, Bytes: 50_000})
		p.Add(faultproxy.Rule{Name: "layer-stall", Method: "GET", Path: `/blobs/sha256:`, After: 4, Times: 1, Kind: faultproxy.Stall, Bytes: 1000, Hang: true})
		_, stderr, err := build(t, "--root", userDir(t, u, "pull-store"), fromContext(t, u, ref))
		if err != nil || !strings.Contains(stderr, "900000") {
			t.Fatalf("pull through transient faults: %v\n%s", err, tail(stderr, 20))
		}
		applied(t, "manifest-503", "config-cut", "layer-cut", "layer-stall")
		if n := strings.Count(stderr, "resuming at byte"); n < 3 {
			t.Errorf("%d layer downloads resumed, want 3:\n%s", n, tail(stderr, 20))
		}
	})

	permanent := []struct {
		name string
		rule faultproxy.Rule
		want string
	}{
		{"upload always 503", faultproxy.Rule{Method: "PATCH", Path: `/blobs/uploads/`, Kind: faultproxy.Status, Status: 503}, "503"},
		{"upload always cut", faultproxy.Rule{Method: "PATCH", Path: `/blobs/uploads/`, Kind: faultproxy.DropRequestBody, Bytes: 10_000}, "gave up after"},
		{"manifest always 500", faultproxy.Rule{Method: "PUT", Path: `/manifests/`, Kind: faultproxy.Status, Status: 500}, "500"},
	}
	for i, tc := range permanent {
		t.Run("permanent push: "+tc.name, func(t *testing.T) {
			p.Clear()
			p.Add(tc.rule)
			broken := fmt.Sprintf("/e2e/broken%d:v1", i)
			start := time.Now()
			_, stderr, err := build(t, "-t", p.Host()+broken, "--push", ctxDir)
			if err == nil {
				t.Fatal("the push succeeded")
			}
			// Four retries wait about 0.2+0.4+0.8+1.6 s per request, with jitter.
			if d := time.Since(start); d > 90*time.Second {
				t.Errorf("failing took %s", d)
			}
			line := lastError(t, stderr)
			for _, w := range []string{p.Host() + broken, tc.want} {
				if !strings.Contains(line, w) {
					t.Errorf("error %q does not mention %q", line, w)
				}
			}
			if d := skopeoDigest(t, r, r.Host+broken); d != "" {
				t.Errorf("the registry holds %s at %s after a failed push", d, broken)
			}
		})
	}

	t.Run("permanent pull", func(t *testing.T) {
		p.Clear()
		p.Add(faultproxy.Rule{Method: "GET", Path: `/blobs/sha256:`, Kind: faultproxy.Status, Status: 502})
		_, stderr, err := build(t, "--root", userDir(t, u, "pull-store-2"), fromContext(t, u, ref))
		if err == nil {
			t.Fatal("the pull succeeded")
		}
		if line := lastError(t, stderr); !strings.Contains(line, "502") || !strings.Contains(line, "gave up after 4 retries") {
			t.Errorf("error %q does not give the registry's answer and the retries", line)
		}
	})
}

// TestPushThreeDestinations pushes one image to two repositories of one registry and one of
// another: each layer blob is uploaded once per registry, and mounted into the second
// repository.
func TestPushThreeDestinations(t *testing.T) {
	u := rootlessUser(t)
	var proxies []*faultproxy.Proxy
	for range 2 {
		r := registrytest.Start(t, registrytest.Options{})
		upstream, _ := url.Parse(r.URL())
		proxies = append(proxies, faultproxy.New(t, upstream, faultproxy.Options{}))
	}
	a, b := proxies[0].Host(), proxies[1].Host()
	_, stderr, err := runKiln(t, u, "build", "-t", a+"/e2e/one:v1", "--destination", a+"/e2e/two:v1",
		"--destination", b+"/e2e/three:v1", "--push", layeredContext(t, u))
	if err != nil {
		t.Fatalf("push: %v\n%s", err, tail(stderr, 10))
	}
	raw := mustRun(t, Root, "skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+a+"/e2e/two:v1")
	var manifest struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal([]byte(raw), &manifest); err != nil || len(manifest.Layers) != 4 {
		t.Fatalf("manifest of %s: %v\n%s", a+"/e2e/two:v1", err, raw)
	}
	upA, upB, mountA := proxies[0].BlobUploads(), proxies[1].BlobUploads(), proxies[0].BlobMounts()
	for _, l := range manifest.Layers {
		if upA[l.Digest] != 1 || upB[l.Digest] != 1 || mountA[l.Digest] != 1 {
			t.Errorf("layer %s: uploaded %d times to %s (%d mounts) and %d times to %s; want 1, 1 mount, 1",
				l.Digest, upA[l.Digest], a, mountA[l.Digest], upB[l.Digest], b)
		}
	}
	for _, ref := range []string{a + "/e2e/one:v1", a + "/e2e/two:v1", b + "/e2e/three:v1"} {
		checkComplete(t, testRegistry{}, ref)
	}
}
