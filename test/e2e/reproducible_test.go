package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestReproducibleAcrossDriversAndUsers builds the same contexts with --source-date-epoch as
// root with the overlay snapshotter and as kiln-sub with the copy snapshotter, each in its own
// store: the image digests must be equal. This checks the two snapshotters produce the same
// layers for real RUN steps (whiteouts, opaque directories, symlinks, hard links), and that
// layer tars are deterministic across stores, users and times.
func TestReproducibleAcrossDriversAndUsers(t *testing.T) {
	needKiln(t)
	needRegistry(t)
	needRoot(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Not here, on purpose: 38 (after `rm -rf d && mkdir d` overlay writes an opaque dir, the
	// copy differ, which sees only the result, one whiteout per child) and 40 (a hard link made
	// to a file of an earlier layer: overlay copies that file up so the link survives, the copy
	// differ sees only the new name). Both give a correct image, not the same bytes.
	for _, c := range []string{"37-whiteouts", "39-symlinks-run", "24-copy-from-stage-owners", "33-copy-symlinks", "31-copy-dir-contents"} {
		t.Run(c, func(t *testing.T) {
			src := filepath.Join(root, "test", "e2e", "testdata", "corpus", c)
			digest := map[string]string{}
			for _, b := range []struct {
				u      User
				driver string
			}{{Root, "overlay"}, {SubUser, "copy"}} {
				ctxDir := contextFor(t, b.u, src)
				stdout, stderr, err := runKilnIn(t, b.u, ctxDir, "build", "-q", "--storage-driver", b.driver, "--source-date-epoch", "1700000000", ".")
				if err != nil {
					t.Fatalf("kiln build as %s with %s: %v\n%s", b.u, b.driver, err, tail(stderr, 20))
				}
				digest[b.driver] = strings.TrimSpace(stdout)
			}
			if digest["overlay"] != digest["copy"] || !strings.HasPrefix(digest["copy"], "sha256:") {
				t.Errorf("same context, different images: overlay as root %s, copy as kiln-sub %s", digest["overlay"], digest["copy"])
			}
		})
	}
}
