package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalCache rebuilds one context in one store, as each user, changing one input at a time,
// and checks from the step log which steps ran and which came from the cache.
func TestLocalCache(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	const dockerfile = `FROM ` + registryAddr + `/busybox:latest
ARG GREETING=hello
RUN echo base-step > /base
COPY app.txt /app.txt
RUN echo "$GREETING" > /greeting && cat /app.txt >> /greeting
CMD ["cat", "/greeting"]
`
	for _, u := range allUsers {
		t.Run(string(u), func(t *testing.T) {
			dir := userDir(t, u, "ctx")
			write := func(name, content string) {
				t.Helper()
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("Dockerfile", dockerfile)
			write("app.txt", "v1\n")
			write(".dockerignore", "ignored.txt\n")
			build := func(args ...string) (digest string, cached int) {
				t.Helper()
				stdout, stderr, err := runKiln(t, u, append(append([]string{"build", "--source-date-epoch", "1"}, args...), dir)...)
				if err != nil {
					t.Fatalf("kiln build %v: %v\n%s", args, err, tail(stderr, 20))
				}
				return strings.TrimSpace(stdout), strings.Count(stderr, "--> cached")
			}
			first, n := build()
			if n != 0 {
				t.Fatalf("first build into an empty store used the cache %d times", n)
			}
			for _, tc := range []struct {
				name       string
				change     func()
				args       []string
				wantCached int
				sameDigest bool
			}{
				{name: "unchanged", change: func() {}, wantCached: 3, sameDigest: true},
				{name: "ignored file changed", change: func() { write("ignored.txt", "noise") }, wantCached: 3, sameDigest: true},
				{name: "copied file changed", change: func() { write("app.txt", "v2\n") }, wantCached: 1},
				{name: "build arg changed", change: func() {}, args: []string{"--build-arg", "GREETING=bonjour"}, wantCached: 0},
				{name: "no-cache", change: func() {}, args: []string{"--no-cache"}, wantCached: 0},
			} {
				tc.change()
				digest, cached := build(tc.args...)
				if cached != tc.wantCached {
					t.Errorf("%s: %d steps from the cache, want %d", tc.name, cached, tc.wantCached)
				}
				if tc.sameDigest && digest != first {
					t.Errorf("%s: digest %s, want the first build's %s", tc.name, digest, first)
				}
				if !tc.sameDigest && digest == first {
					t.Errorf("%s: the image did not change (%s)", tc.name, digest)
				}
			}
		})
	}
}
