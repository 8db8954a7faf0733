package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The builders of TestS2IBuilders, built by the test from the Debian minbase fixture: a Python
// builder that keeps a wheel cache between builds, and a static-site builder whose output is
// served by a busybox runtime image.
const (
	s2iPythonBuilder = "s2i-python:e2e"
	s2iStaticBuilder = "s2i-static:e2e"
	s2iStaticRuntime = "s2i-static-runtime:e2e"
	// What the Python sample prints: its two vendored packages at work, and APP_GREETING of
	// its .s2i/environment.
	s2iPythonAnswer = "BONJOUR, S2I, FROM GREETING 1.0!\n"
)

// TestS2IBuilders builds two real s2i builders, builds applications with them as the
// unprivileged SubUser, runs the images and checks what they print: incremental builds
// restore the Python wheel cache, a runtime image serves the static site, --allowed-uids
// refuses, --as-dockerfile gives the same filesystem as the native build, and a git URL
// source is cloned and labelled.
func TestS2IBuilders(t *testing.T) {
	needKiln(t)
	needRoot(t)
	needRegistry(t)
	if !registryHas("debian", "bookworm") {
		t.Skipf("%s/debian:bookworm missing; remedy: make fixtures-debian (or CI=true make test)", registryAddr)
	}
	u := SubUser
	store := storeDir(t, u)
	for img, dir := range map[string]string{s2iPythonBuilder: "python-builder", s2iStaticBuilder: "static-builder", s2iStaticRuntime: "static-runtime"} {
		if _, stderr, err := runKiln(t, u, "build", "-t", img, contextFor(t, u, filepath.Join("testdata", "s2i", dir))); err != nil {
			t.Fatalf("building %s: %v\n%s", img, err, tail(stderr, 40))
		}
	}
	t.Run("python", func(t *testing.T) { s2iPython(t, u, store) })
	t.Run("static-site", func(t *testing.T) { s2iStaticSite(t, u, store) })
	t.Run("allowed-uids", func(t *testing.T) { s2iAllowedUIDs(t, u, store) })
	t.Run("git-source", func(t *testing.T) { s2iGitSource(t, u, store) })
	t.Run("script-overrides-and-errors", func(t *testing.T) { s2iOverridesAndErrors(t, u, store) })
}

// s2iOverridesAndErrors checks the script lookup order end to end (.s2i/bin over the builder's
// label, --scripts-url file:// over both) and that a missing script, an unreachable scripts URL
// and a missing source each fail with one error naming what was looked for and where.
func s2iOverridesAndErrors(t *testing.T, u User, store string) {
	src := contextFor(t, u, filepath.Join("testdata", "s2i", "site"))
	assemble := func(dir, says string) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\nset -e\necho '---> " + says + "'\nmkdir -p /opt/site/public\necho " + says + " > /opt/site/public/index.html\n"
		if err := os.WriteFile(filepath.Join(dir, "assemble"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		a := u.lookup(t)
		for p := dir; strings.HasPrefix(p, filepath.Dir(src)); p = filepath.Dir(p) {
			if err := os.Lchown(p, a.uid, a.gid); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Lchown(filepath.Join(dir, "assemble"), a.uid, a.gid); err != nil {
			t.Fatal(err)
		}
	}
	assemble(filepath.Join(src, ".s2i", "bin"), "assemble from .s2i/bin of the source")
	scripts := userDir(t, u, "scripts")
	assemble(scripts, "assemble from --scripts-url")
	runtime := []string{"--runtime-image", s2iStaticRuntime}

	_, stderr := s2iBuild(t, u, store, append([]string{src, s2iStaticBuilder, "s2i-override:e2e"}, runtime...)...)
	if !strings.Contains(stderr, "---> assemble from .s2i/bin of the source") || strings.Contains(stderr, "rendered about") {
		t.Errorf(".s2i/bin/assemble did not replace the builder's:\n%s", tail(stderr, 20))
	}
	_, stderr = s2iBuild(t, u, store, append([]string{src, s2iStaticBuilder, "s2i-override:e2e", "--scripts-url", "file://" + scripts}, runtime...)...)
	if !strings.Contains(stderr, "---> assemble from --scripts-url") {
		t.Errorf("--scripts-url file:// did not replace both:\n%s", tail(stderr, 20))
	}

	// Without the override, for the errors: the builder's label is where scripts are found.
	if err := os.RemoveAll(filepath.Join(src, ".s2i", "bin")); err != nil {
		t.Fatal(err)
	}
	plain := src
	for _, tc := range []struct {
		args []string
		want []string
	}{
		// The runtime image has a run script but no assemble: the step says so before failing.
		{[]string{plain, s2iStaticRuntime, "x:e2e"}, []string{"kiln s2i: no assemble script in " + s2iStaticRuntime + ": /usr/libexec/s2i/assemble, where the label io.openshift.s2i.scripts-url", ".s2i/bin/assemble"}},
		{[]string{plain, s2iStaticBuilder, "x:e2e", "--scripts-url", "http://127.0.0.1:1/s2i"}, []string{"--scripts-url http://127.0.0.1:1/s2i: fetching the assemble script", "connection refused"}},
		{[]string{filepath.Join(plain, "no-such-dir"), s2iStaticBuilder, "x:e2e"}, []string{"no-such-dir", "give a directory or a git URL"}},
	} {
		_, stderr, err := runKiln(t, u, append([]string{"s2i", "build", "--root", store}, tc.args...)...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if err == nil || !strings.HasPrefix(last, "kiln: error: ") {
			t.Errorf("kiln s2i build %s: %v, want a failure ending in one error line:\n%s", strings.Join(tc.args, " "), err, tail(stderr, 10))
			continue
		}
		for _, want := range tc.want {
			if !strings.Contains(stderr, want) {
				t.Errorf("kiln s2i build %s: the output lacks %q:\n%s", strings.Join(tc.args, " "), want, tail(stderr, 6))
			}
		}
	}
}

// s2iPython builds the Python sample twice, the second time incrementally, and runs both.
func s2iPython(t *testing.T, u User, store string) {
	src := contextFor(t, u, filepath.Join("testdata", "s2i", "python-app"))
	out := userDir(t, u, "out")
	tag := registryAddr + "/e2e/s2i-python-app:v1"

	first := filepath.Join(out, "first")
	start := time.Now()
	_, stderr := s2iBuild(t, u, store, src, s2iPythonBuilder, tag, "--push", "-o", "type=oci,dest="+first)
	firstTook := time.Since(start)
	for _, want := range []string{"wheel for greeting: building", "wheel for shout: building", "assembled with APP_GREETING=bonjour"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("first build: assemble did not say %q:\n%s", want, tail(stderr, 30))
		}
	}
	if got := runBundle(t, umociUnpack(t, first, ""), "/usr/libexec/s2i/run", "--self-test"); got != s2iPythonAnswer {
		t.Errorf("the first image answered %q, want %q", got, s2iPythonAnswer)
	}
	if cfg := configOf(t, readS2IImage(t, first)); !hasEnv(cfg.Config.Env, "APP_GREETING=bonjour") || cfg.Config.User != "1001" {
		t.Errorf("image env %q, user %q: want .s2i/environment's APP_GREETING and the builder's user", cfg.Config.Env, cfg.Config.User)
	}

	// The incremental build gets the wheels the first one left (its save-artifacts output) and
	// builds none; the image it makes answers the same.
	second := filepath.Join(out, "second")
	start = time.Now()
	_, stderr = s2iBuild(t, u, store, src, s2iPythonBuilder, tag, "--incremental", "--push", "-o", "type=oci,dest="+second)
	secondTook := time.Since(start)
	for _, want := range []string{"restored 2 wheels from the previous image", "wheel for greeting: cached", "wheel for shout: cached"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("incremental build: assemble did not say %q:\n%s", want, tail(stderr, 30))
		}
	}
	if strings.Contains(stderr, "wheel for greeting: building") || strings.Contains(stderr, "wheel for shout: building") {
		t.Errorf("the incremental build built a wheel again:\n%s", tail(stderr, 30))
	}
	if got := runBundle(t, umociUnpack(t, second, ""), "/usr/libexec/s2i/run", "--self-test"); got != s2iPythonAnswer {
		t.Errorf("the incremental image answered %q, want %q", got, s2iPythonAnswer)
	}
	// Speed is the bench's to assert; the ratio is reported for the record.
	t.Logf("python s2i build: first %.2fs, incremental %.2fs (ratio %.2f)", firstTook.Seconds(), secondTook.Seconds(), secondTook.Seconds()/firstTook.Seconds())
}

// s2iStaticSite builds the site into the busybox runtime image, runs it, and checks that the
// --as-dockerfile route gives the same filesystem and configuration.
func s2iStaticSite(t *testing.T, u User, store string) {
	src := contextFor(t, u, filepath.Join("testdata", "s2i", "site"))
	out := userDir(t, u, "out")
	native := filepath.Join(out, "native")
	args := []string{"--runtime-image", s2iStaticRuntime, "--allowed-uids", "1-"}
	_, stderr := s2iBuild(t, u, store, append([]string{src, s2iStaticBuilder, "s2i-site:e2e", "-o", "type=oci,dest=" + native}, args...)...)
	if !strings.Contains(stderr, "rendered about") {
		t.Errorf("assemble did not render the pages:\n%s", tail(stderr, 30))
	}
	got := runBundle(t, umociUnpack(t, native, ""), "/usr/libexec/s2i/run", "--self-test")
	for _, want := range []string{"<h1>kiln-site</h1>", `<a href="news.html">news</a>`, "<h1>About</h1>\n<p>Built by kiln s2i, served by busybox.</p>"} {
		if !strings.Contains(got, want) {
			t.Errorf("the site served %q, want it to hold %q", got, want)
		}
	}
	img := readS2IImage(t, native)
	tree, err := flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tree["/var/www/public/index.html"]; !ok {
		t.Error("the runtime image lacks /var/www/public/index.html")
	}
	for _, p := range []string{"/opt/site", "/tmp/src", "/etc/debian_version"} {
		if _, ok := tree[p]; ok {
			t.Errorf("the runtime image holds %s of the builder", p)
		}
	}

	// --as-dockerfile, then kiln build of what it wrote: the same image, but for times.
	dfDir := filepath.Join(userDir(t, u, "generated"), "site")
	if _, stderr, err := runKiln(t, u, append([]string{"s2i", "build", "--root", store, src, s2iStaticBuilder, "s2i-site:e2e", "--as-dockerfile", filepath.Join(dfDir, "Dockerfile")}, args...)...); err != nil {
		t.Fatalf("kiln s2i build --as-dockerfile: %v\n%s", err, tail(stderr, 30))
	}
	viaDockerfile := filepath.Join(out, "via-dockerfile")
	if _, stderr, err := runKiln(t, u, "build", "--root", store, "-t", "s2i-site:e2e", "-o", "type=oci,dest="+viaDockerfile, dfDir); err != nil {
		t.Fatalf("kiln build of the generated Dockerfile: %v\n%s", err, tail(stderr, 30))
	}
	other, err := flatten(readS2IImage(t, viaDockerfile))
	if err != nil {
		t.Fatal(err)
	}
	if diffs := diffTrees(tree, other, diffAllow{}); len(diffs) > 0 {
		t.Errorf("the native s2i image and the one built from --as-dockerfile differ:\n%s", strings.Join(diffs, "\n"))
	}
	if diffs := diffConfigs(configOf(t, img), configOf(t, readS2IImage(t, viaDockerfile)), diffAllow{Fields: []string{"History", "Created"}}); len(diffs) > 0 {
		t.Errorf("their configurations differ:\n%s", strings.Join(diffs, "\n"))
	}
}

// s2iAllowedUIDs checks the refusal rule: an assemble user or runtime USER outside
// --allowed-uids is refused before anything is built, with an error naming the image.
func s2iAllowedUIDs(t *testing.T, u User, store string) {
	src := contextFor(t, u, filepath.Join("testdata", "s2i", "site"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{s2iStaticBuilder, "x:e2e", "--runtime-image", s2iStaticRuntime, "--allowed-uids", "2000-"},
			"the assemble user of builder image " + s2iStaticBuilder + " is uid 1001, outside --allowed-uids 2000-"},
		{[]string{s2iStaticBuilder, "x:e2e", "--runtime-image", s2iStaticRuntime, "--allowed-uids", "1-", "--assemble-user", "root"},
			"is uid 0 (root), outside --allowed-uids 1-"},
		{[]string{s2iStaticBuilder, "x:e2e", "--runtime-image", registryAddr + "/busybox:latest", "--runtime-artifact", "/opt/site/public:/www", "--allowed-uids", "1-"},
			"the USER of runtime image " + registryAddr + "/busybox:latest is uid 0 (root)"},
	} {
		_, stderr, err := runKiln(t, u, append([]string{"s2i", "build", "--root", store, src}, tc.args...)...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("kiln s2i build %s: %v, stderr:\n%s\nwant an error containing %q", strings.Join(tc.args, " "), err, tail(stderr, 10), tc.want)
		}
		if strings.Contains(stderr, "rendered") {
			t.Errorf("kiln s2i build %s ran assemble before refusing", strings.Join(tc.args, " "))
		}
	}
}

// s2iGitSource builds from a git URL with #ref: kiln clones it and labels the image with the
// commit.
func s2iGitSource(t *testing.T, u User, store string) {
	uri := gitServer(t, filepath.Join("testdata", "s2i", "site"))
	out := filepath.Join(userDir(t, u, "out"), "git")
	_, stderr := s2iBuild(t, u, store, uri+"#main", s2iStaticBuilder, "s2i-site-git:e2e",
		"--runtime-image", s2iStaticRuntime, "-o", "type=oci,dest="+out)
	if !strings.Contains(stderr, "rendered news") {
		t.Errorf("assemble did not render the cloned pages:\n%s", tail(stderr, 30))
	}
	remote, err := exec.Command("git", "ls-remote", uri, "refs/heads/main").Output()
	if err != nil {
		t.Fatalf("git ls-remote %s: %v", uri, err)
	}
	head := strings.Fields(string(remote))[0]
	labels := configOf(t, readS2IImage(t, out)).Config.Labels
	for k, want := range map[string]string{
		"io.openshift.s2i.build.source-location": uri,
		"io.openshift.s2i.build.commit.id":       head,
		"io.openshift.s2i.build.commit.ref":      "main",
		"io.openshift.s2i.build.commit.author":   "t <t@e>",
		"io.openshift.s2i.build.commit.message":  "app",
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, labels[k], want)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(head) {
		t.Errorf("git ls-remote gave %q", remote)
	}
}
