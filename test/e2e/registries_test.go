package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	needKiln(t)
	needRoot(t)
	needRegistry(t)
	u := SubUser
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
			t.Run("credential-helper", func(t *testing.T) {
				bin := userDir(t, u, "bin")
				helper := registrytest.BuildCredHelper(t, bin, "kilntest")
				os.Chmod(helper, 0o755)
				store := filepath.Join(userDir(t, u, "creds"), "creds.json")
				env := []string{
					"PATH=" + bin + ":/usr/local/bin:/usr/bin:/bin",
					registrytest.CredHelperFileEnv + "=" + store,
					dockerConfig(t, u, fmt.Sprintf(`{"credHelpers":{%q:"kilntest"}}`, r.Host)),
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := u.command(ctx, t, "/", env, helper, "store")
				cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"ServerURL":%q,"Username":%q,"Secret":%q}`, r.Host, regUser, regPass))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("storing credentials in the helper: %v\n%s", err, out)
				}
				pushAndPull(t, "helper", env)
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
	needKiln(t)
	needRoot(t)
	needRegistry(t)
	u := SubUser
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
