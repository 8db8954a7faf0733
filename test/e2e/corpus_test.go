package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// corpusCase is one directory of testdata/corpus (or testdata/samples): a
// Dockerfile, its context files and an optional case.json.
type corpusCase struct {
	Name string `json:"-"`
	Dir  string `json:"-"`
	// Args are extra `kiln build` arguments, also given to buildah.
	Args []string `json:"args"`
	// Users to build as; default all three.
	Users []User `json:"users"`
	// Run runs the image's CMD/ENTRYPOINT and compares its stdout with Stdout.
	Run    bool   `json:"run"`
	Stdout string `json:"stdout"`
	// ExpectError is a substring of kiln's stderr when the build must fail.
	ExpectError string `json:"expectError"`
	// Diff compares with buildah's build (as root); default true unless ExpectError.
	Diff       *bool     `json:"diff"`
	DiffIgnore diffAllow `json:"diffIgnore"`
	// BuildahArgs go to buildah only, before Args (e.g. ["--format", "docker"]
	// so that buildah keeps HEALTHCHECK, SHELL and ONBUILD).
	BuildahArgs []string `json:"buildahArgs"`
	// Why explains "diff": false, or where the expectations come from.
	Why string `json:"why"`
}

// wantDiff reports whether the case is compared with buildah.
func (c corpusCase) wantDiff() bool {
	if c.Diff != nil {
		return *c.Diff
	}
	return c.ExpectError == ""
}

// buildahArgs are the arguments of the case's buildah build.
func (c corpusCase) buildahArgs() []string {
	return append(append([]string{}, c.BuildahArgs...), c.Args...)
}

// loadCases reads every case directory under dir, sorted by name.
func loadCases(dir string) ([]corpusCase, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing cases in %s: %w", dir, err)
	}
	var cases []corpusCase
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		c, err := loadCase(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		cases = append(cases, c)
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].Name < cases[j].Name })
	return cases, nil
}

func loadCase(dir string) (corpusCase, error) {
	c := corpusCase{Name: filepath.Base(dir), Dir: dir}
	if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
		return c, fmt.Errorf("case %s: %w", dir, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return c, fmt.Errorf("case %s: %w", dir, err)
	default:
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("case %s: decoding case.json: %w", dir, err)
		}
	}
	if len(c.Users) == 0 {
		c.Users = allUsers
	}
	for _, u := range c.Users {
		if !contains([]string{string(Root), string(SubUser), string(NoSubUser)}, string(u)) {
			return c, fmt.Errorf("case %s: unknown user %q", dir, u)
		}
	}
	if (len(c.DiffIgnore.Paths) > 0 || len(c.DiffIgnore.Fields) > 0) && c.DiffIgnore.Why == "" {
		return c, fmt.Errorf("case %s: diffIgnore needs a \"why\"", dir)
	}
	return c, nil
}

// TestCorpus builds every case of testdata/corpus with kiln as each of its
// users and checks it against the case's expectations and against buildah.
func TestCorpus(t *testing.T) {
	runCases(t, filepath.Join("testdata", "corpus"))
}

// TestSamples runs the harness's own sample cases the same way.
func TestSamples(t *testing.T) {
	runCases(t, filepath.Join("testdata", "samples"))
}

func runCases(t *testing.T, dir string) {
	cases, err := loadCases(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Skipf("no cases in %s yet; remedy: add case directories (see test/README.md)", dir)
	}
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			// Cases share nothing (own contexts, stores, buildah roots), and
			// much of each is waiting on the registry or on runc: overlap them.
			t.Parallel()
			runCase(t, c)
		})
	}
}

func runCase(t *testing.T, c corpusCase) {
	needFixtures(t, c.Dir)
	for _, u := range c.Users {
		t.Run(string(u), func(t *testing.T) {
			layout := kilnBuildCase(t, u, c)
			if layout == "" {
				return
			}
			if c.Run {
				got := strings.TrimRight(runBundle(t, umociUnpack(t, layout, "")), "\n")
				if got != c.Stdout {
					t.Errorf("image output as built by %s:\n got: %q\nwant: %q", u, got, c.Stdout)
				}
			}
			if u == Root && c.wantDiff() {
				ref := buildahBuild(t, Root, contextFor(t, Root, c.Dir), c.buildahArgs()...)
				compareImages(t, layout, ref, c.DiffIgnore)
			}
		})
	}
}

// kilnBuildCase builds c as u into an OCI layout and returns it, or "" when
// the case expects (and got) an error.
func kilnBuildCase(t *testing.T, u User, c corpusCase) string {
	t.Helper()
	ctxDir := contextFor(t, u, c.Dir)
	out := filepath.Join(userDir(t, u, "out"), "oci")
	args := append([]string{"build", "--output", "type=oci,dest=" + out}, c.Args...)
	args = append(args, ctxDir)
	_, stderr, err := runKilnIn(t, u, ctxDir, args...)
	if c.ExpectError != "" {
		switch {
		case err == nil:
			t.Fatalf("kiln build as %s succeeded; want an error containing %q", u, c.ExpectError)
		case !strings.Contains(stderr, c.ExpectError):
			t.Fatalf("kiln build as %s failed without %q in stderr:\n%s", u, c.ExpectError, tail(stderr, 40))
		}
		return ""
	}
	if err != nil {
		t.Fatalf("kiln build as %s: %v\n%s", u, err, tail(stderr, 60))
	}
	return out
}

// needFixtures skips t when the case's Dockerfile names a fixture image of
// the test registry that is not there (the Debian one is built on request).
func needFixtures(t *testing.T, dir string) {
	t.Helper()
	df, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(df), registryAddr+"/debian") && !registryHas("debian", "bookworm") {
		t.Skipf("%s/debian:bookworm missing; remedy: make fixtures-debian (or CI=true make test)", registryAddr)
	}
}

// registryHas reports whether the test registry serves repo:tag.
func registryHas(repo, tag string) bool {
	req, err := http.NewRequest(http.MethodHead, "http://"+registryAddr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
