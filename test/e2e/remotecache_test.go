package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-build/kiln/test/registrytest"
)

// The cache suite builds as an unprivileged user with --cache-to, deletes the store, and
// rebuilds into an empty one with --cache-from, as a fresh CI pod would.

// cacheDockerfile has two stages; its first RUN writes random bytes, so a rebuild that gives
// the same digest can only have come from the cache.
const cacheDockerfile = `FROM localhost:5000/busybox:latest AS builder
RUN head -c 200000 /dev/urandom > /random
COPY src.txt /src.txt
RUN cat /src.txt /random | wc -c > /built
FROM localhost:5000/busybox:latest
ENV STAGE=final
COPY --from=builder /built /built
RUN head -c 1000 /dev/urandom > /final
LABEL org.example.cache=yes
CMD ["cat", "/built"]
`

// stepLine is a step's result line: "[stage 1/2 builder] --> cached, layer ..." or
// "[stage 2/2] --> 12ms, writing its layer".
var stepLine = regexp.MustCompile(`(?m)^(\[stage [^]]*\]) --> (cached|[0-9.]+[µm]?s)`)

// stepResults lists, in order, whether each file-changing step came from the cache.
func stepResults(stderr string) []bool {
	var out []bool
	for _, m := range stepLine.FindAllStringSubmatch(stderr, -1) {
		out = append(out, m[2] == "cached")
	}
	return out
}

// writeContext writes files into a fresh context directory of u's.
func writeContext(t *testing.T, u User, purpose string, files map[string]string) string {
	t.Helper()
	dir := userDir(t, u, purpose)
	for name, content := range files {
		writeUserFile(t, u, filepath.Join(dir, name), content)
	}
	return dir
}

// TestCacheFreshPod exports the cache of a two-stage build, deletes the store, and rebuilds
// into an empty store: every step hits and the digest is the same. After a change at step k,
// only steps from k on run. For a registry cache and a directory cache.
func TestCacheFreshPod(t *testing.T) {
	u := rootlessUser(t)
	reg := registrytest.Start(t, registrytest.Options{TLS: true, Users: map[string]string{regUser: regPass}})
	env := []string{dockerConfig(t, u, authsConfig(regUser, regPass, reg.Host))}
	ca := "--registry-ca=" + reg.Host + "=" + userFile(t, u, reg.CAFile)
	for _, backend := range []struct{ name, to, from string }{
		{"registry", "type=registry,ref=" + reg.Host + "/e2e/cache,mode=max", "type=registry,ref=" + reg.Host + "/e2e/cache"},
		{"local", "type=local,dest=" + "DIR" + ",mode=max", "type=local,src=" + "DIR"},
	} {
		t.Run(backend.name, func(t *testing.T) {
			cacheDir := filepath.Join(userDir(t, u, "cache-dir"), "layout")
			to := strings.ReplaceAll(backend.to, "DIR", cacheDir)
			from := strings.ReplaceAll(backend.from, "DIR", cacheDir)
			ctxDir := writeContext(t, u, "ctx", map[string]string{"Dockerfile": cacheDockerfile, "src.txt": "one\n"})
			build := func(name string, args ...string) (digest string, steps []bool, stderr string) {
				t.Helper()
				store := userDir(t, u, "store-"+name)
				stdout, stderr, err := runKilnEnv(t, u, "/", env, append(append([]string{"build", "--root", store, ca}, args...), ctxDir)...)
				if err != nil {
					t.Fatalf("build %s: %v\n%s", name, err, tail(stderr, 20))
				}
				os.RemoveAll(store) // the pod is gone
				return builtDigest(t, stdout), stepResults(stderr), stderr
			}
			first, steps, _ := build("a", "--cache-to", to)
			if len(steps) != 5 {
				t.Fatalf("want 5 file-changing steps, the log shows %d", len(steps))
			}
			second, steps, stderr := build("b", "--cache-from", from)
			if second != first {
				t.Errorf("full cache hit: digest %s, the first build made %s", second, first)
			}
			for i, hit := range steps {
				if !hit {
					t.Errorf("step %d ran on a full cache hit", i+1)
				}
			}
			// Only what the final image needs is fetched: not the builder's random layer.
			if strings.Contains(stderr, "builder] fetched") {
				t.Errorf("the builder stage's layers were fetched though no step ran on them:\n%s", tail(stderr, 20))
			}

			// A change at step 2 (COPY src.txt): step 1 hits, 2 and everything after runs.
			writeUserFile(t, u, filepath.Join(ctxDir, "src.txt"), "two\n")
			_, steps, _ = build("c", "--cache-from", from)
			want := []bool{true, false, false, false, false}
			// Step order in the log: builder RUN, COPY, RUN; then final COPY --from, RUN.
			got := steps
			if len(got) != len(want) {
				t.Fatalf("after the change: %d steps in the log, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("after a change at step 2: step %d cached=%v, want %v", i+1, got[i], want[i])
				}
			}
		})
	}
}

// TestCacheCorrectness covers the bug classes other builders' caches have had, each through a
// cache export and an import into an empty store.
func TestCacheCorrectness(t *testing.T) {
	u := rootlessUser(t)
	reg := registrytest.Start(t, registrytest.Options{})
	cacheRef := func(name string) []string {
		r := "type=registry,ref=" + reg.Host + "/e2e/" + name
		return []string{"--cache-to", r + ",mode=max", "--cache-from", r}
	}
	build := func(t *testing.T, ctxDir string, args ...string) (string, []bool, string) {
		t.Helper()
		store := userDir(t, u, "store")
		stdout, stderr, err := runKiln(t, u, append(append([]string{"build", "--root", store}, args...), ctxDir)...)
		if err != nil {
			t.Fatalf("build: %v\n%s", err, tail(stderr, 20))
		}
		os.RemoveAll(store)
		return builtDigest(t, stdout), stepResults(stderr), stderr
	}

	t.Run("deleted files, modes and owners survive", func(t *testing.T) {
		ctxDir := writeContext(t, u, "ctx", map[string]string{"Dockerfile": `FROM localhost:5000/busybox:latest
RUN touch /a /b /suid && chmod 4755 /suid && mkdir -p /sticky /d && chmod 1777 /sticky && touch /d/x && chown 1:2 /b
RUN rm /a /d/x
ARG CHECK=1
RUN echo "check $CHECK"; stat -c '%n %a %u:%g' /suid /sticky /b; ls /a /d/x 2>&1 | sed 's/^.*: //'
`})
		_, _, before := build(t, ctxDir, cacheRef("correct")...)
		_, steps, after := build(t, ctxDir, append(cacheRef("correct"), "--build-arg", "CHECK=2")...)
		if len(steps) != 3 || !steps[0] || !steps[1] || steps[2] {
			t.Fatalf("want the first two steps cached and the last run, got %v", steps)
		}
		for _, want := range []string{"/suid 4755 0:0", "/sticky 1777 0:0", "/b 644 1:2", "No such file or directory"} {
			if !strings.Contains(before, want) || !strings.Contains(after, want) {
				t.Errorf("%q: before the cache round trip %v, after %v", want, strings.Contains(before, want), strings.Contains(after, want))
			}
		}
		if strings.Count(after, "No such file or directory") != 2 {
			t.Errorf("a file deleted in a cached layer came back:\n%s", tail(after, 10))
		}
	})

	t.Run("ARG scope", func(t *testing.T) {
		ctxDir := writeContext(t, u, "ctx", map[string]string{"f.txt": "f\n", "Dockerfile": `FROM localhost:5000/busybox:latest
RUN echo before > /before
ARG USED=1
ARG UNUSED=1
COPY f.txt /f.txt
RUN echo "$USED" > /used
`})
		build(t, ctxDir, cacheRef("args")...)
		// UNUSED is seen by the RUN after it (it is in its environment), not by COPY.
		_, steps, _ := build(t, ctxDir, append(cacheRef("args"), "--build-arg", "USED=2")...)
		if want := []bool{true, true, false}; fmt.Sprint(steps) != fmt.Sprint(want) {
			t.Errorf("changing an ARG a RUN uses: steps cached %v, want %v", steps, want)
		}
		_, steps, _ = build(t, ctxDir, append(cacheRef("args"), "--build-arg", "USED=2")...)
		if want := []bool{true, true, true}; fmt.Sprint(steps) != fmt.Sprint(want) {
			t.Errorf("rebuilding unchanged: steps cached %v, want %v", steps, want)
		}
	})

	t.Run("a new base image misses everything", func(t *testing.T) {
		base := reg.Host + "/e2e/base:v1"
		seedImage(t, base, "--dest-tls-verify=false")
		ctxDir := writeContext(t, u, "ctx", map[string]string{"Dockerfile": "FROM " + base + "\nRUN echo one > /one\nRUN echo two > /two\n"})
		build(t, ctxDir, cacheRef("base")...)
		if _, steps, _ := build(t, ctxDir, cacheRef("base")...); fmt.Sprint(steps) != "[true true]" {
			t.Fatalf("unchanged base: cached %v", steps)
		}
		// Push another image under the base's tag.
		other := writeContext(t, u, "other", map[string]string{"Dockerfile": "FROM localhost:5000/busybox:latest\nRUN echo new > /new\n"})
		if _, stderr, err := runKiln(t, u, "build", "-t", base, "--push", other); err != nil {
			t.Fatalf("pushing a new base: %v\n%s", err, tail(stderr, 10))
		}
		if _, steps, _ := build(t, ctxDir, cacheRef("base")...); fmt.Sprint(steps) != "[false false]" {
			t.Errorf("new base: cached %v, want nothing", steps)
		}
	})
}

// TestSecretsNowhere builds with a secret mount and a secret env, exports the cache, and looks
// for the secret in every layer, the config, the history, the cache export and the log.
func TestSecretsNowhere(t *testing.T) {
	u := rootlessUser(t)
	const secret = "kiln-S3CRET-4f9a1c"
	secretFile := filepath.Join(userDir(t, u, "secrets"), "token")
	writeUserFile(t, u, secretFile, secret)
	ctxDir := writeContext(t, u, "ctx", map[string]string{"Dockerfile": `FROM localhost:5000/busybox:latest
RUN --mount=type=secret,id=tok,target=/run/tok test -s /run/tok && echo mounted > /mounted
RUN --mount=type=secret,id=tok2,env=TOKEN test -n "$TOKEN" && echo "env ok" > /env
`})
	store := userDir(t, u, "store")
	cacheDir := filepath.Join(userDir(t, u, "cache"), "layout")
	out := filepath.Join(userDir(t, u, "out"), "image")
	stdout, stderr, err := runKilnEnv(t, u, "/", []string{"TOKEN_SRC=" + secret}, "build", "--root", store,
		"--secret", "id=tok,src="+secretFile, "--secret", "id=tok2,env=TOKEN_SRC",
		"--cache-to", "type=local,dest="+cacheDir+",mode=max", "-o", "type=oci,dest="+out, ctxDir)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, tail(stderr, 20))
	}
	if strings.Contains(stdout+stderr, secret) {
		t.Errorf("the build log shows the secret")
	}
	for _, dir := range []string{store, cacheDir, out} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
				if plain, err := io.ReadAll(zr); err == nil {
					data = plain
				}
			}
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("the secret is in %s", p)
			}
			return nil
		})
	}
}
