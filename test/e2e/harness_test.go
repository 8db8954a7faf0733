package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOracleSelfCheck proves the harness without kiln: each sample is built by
// buildah with two storage drivers and as two users, the builds must compare
// equal, and samples with "run" must print their expected output under runc.
func TestOracleSelfCheck(t *testing.T) {
	needRoot(t)
	needRegistry(t)
	cases, err := loadCases(filepath.Join("testdata", "samples"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.ExpectError != "" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			overlay := buildahBuild(t, Root, contextFor(t, Root, c.Dir), c.buildahArgs()...)
			vfs := buildahBuild(t, Root, contextFor(t, Root, c.Dir),
				append([]string{"--storage-driver", "vfs"}, c.buildahArgs()...)...)
			compareImages(t, vfs, overlay, c.DiffIgnore)

			if contains(userNames(c.Users), string(SubUser)) {
				rootless := buildahBuild(t, SubUser, contextFor(t, SubUser, c.Dir), c.buildahArgs()...)
				compareImages(t, overlay, rootless, c.DiffIgnore)
			}
			if c.Run {
				got := strings.TrimRight(runBundle(t, umociUnpack(t, vfs, "latest")), "\n")
				if got != c.Stdout {
					t.Errorf("buildah's image prints %q, case wants %q", got, c.Stdout)
				}
			}
			img := skopeoInspect(t, vfs)
			if len(img.Layers) == 0 && c.Name != "scratch-copy" {
				t.Errorf("skopeo sees no layers in %s", vfs)
			}
		})
	}
}

func userNames(us []User) []string {
	var s []string
	for _, u := range us {
		s = append(s, string(u))
	}
	return s
}

// TestCorpusOracle runs the corpus through buildah instead of kiln: every
// case buildah is trusted on ("diff" not false) must build, and print its
// expected stdout under runBundle. A failure here is a corpus or harness
// problem, not a kiln one. It doubles the corpus time, so it runs in CI and
// on request.
func TestCorpusOracle(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Getenv("KILN_TEST_ORACLE") != "1" {
		t.Skip("runs only in CI; remedy: set KILN_TEST_ORACLE=1 to check the corpus against buildah")
	}
	needRoot(t)
	needRegistry(t)
	cases, err := loadCases(filepath.Join("testdata", "corpus"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.ExpectError != "" || !c.wantDiff() {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			needFixtures(t, c.Dir)
			img := buildahBuild(t, Root, contextFor(t, Root, c.Dir), c.buildahArgs()...)
			if !c.Run {
				return
			}
			tag := "latest"
			if strings.HasSuffix(img, ".tar") {
				tag = ""
			}
			if got := strings.TrimRight(runBundle(t, umociUnpack(t, img, tag)), "\n"); got != c.Stdout {
				t.Errorf("buildah's image prints\n%q\ncase wants\n%q", got, c.Stdout)
			}
		})
	}
}
