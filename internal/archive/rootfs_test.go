package archive

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// rootfsTar finds a Debian rootfs tar made by mmdebstrap: $KILN_TEST_ROOTFS_TAR, or the
// suite-wide cache in /var/cache/kiln-test.
func rootfsTar(t *testing.T) string {
	if p := os.Getenv("KILN_TEST_ROOTFS_TAR"); p != "" {
		return p
	}
	matches, _ := filepath.Glob("/var/cache/kiln-test/debian-bookworm-*.tar")
	if len(matches) == 0 {
		t.Skipf("no Debian rootfs tar: run `mmdebstrap --variant=minbase --mode=unshare bookworm " +
			"/var/cache/kiln-test/debian-bookworm-$(date +%%G-W%%V).tar http://deb.debian.org/debian` " +
			"or set KILN_TEST_ROOTFS_TAR")
	}
	return matches[len(matches)-1]
}

// TestRealRootfs unpacks a real Debian rootfs with Extract and with GNU tar and checks the
// two trees serialize to the same layer (device nodes, which Extract skips, aside).
func TestRealRootfs(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks a 170 MB rootfs twice; skipped with -short")
	}
	src := rootfsTar(t)
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if os.Lchown(probe, 42, 42) != nil {
		// A single id mapped: the system groups of a Debian rootfs cannot be set, and GNU tar
		// cannot serve as the oracle. Extract must still succeed when told to squash owners.
		err := Extract(context.Background(), f, t.TempDir(), ExtractOptions{SquashOwners: true, Warnings: io.Discard})
		if err != nil {
			t.Fatalf("Extract with SquashOwners and a single id mapped: %v", err)
		}
		t.Log("single id mapped: checked SquashOwners only; run as root or with subuid ranges for the GNU tar comparison")
		return
	}
	byKiln, byGNU := t.TempDir(), t.TempDir()
	var warn bytes.Buffer
	if err := Extract(context.Background(), f, byKiln, ExtractOptions{Warnings: &warn}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(warn.String(), "device node") {
		t.Errorf("expected warnings about skipped device nodes, got %q", warn.String())
	}
	cmd := exec.Command("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", src, "-C", byGNU, "--exclude=./dev/*")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, out)
	}
	for _, dir := range []string{byKiln, byGNU} {
		if err := os.RemoveAll(filepath.Join(dir, "dev")); err != nil {
			t.Fatal(err)
		}
	}
	a, b := writeDiff(t, byKiln, WriteOptions{}), writeDiff(t, byGNU, WriteOptions{})
	if !bytes.Equal(a, b) {
		ha, hb := readHeaders(t, a), readHeaders(t, b)
		for i := range min(len(ha), len(hb)) {
			if ha[i].Name != hb[i].Name || ha[i].Mode != hb[i].Mode || ha[i].Uid != hb[i].Uid ||
				!ha[i].ModTime.Equal(hb[i].ModTime) || ha[i].Linkname != hb[i].Linkname || ha[i].Size != hb[i].Size {
				t.Fatalf("first difference at entry %d:\nkiln %+v\ngnu  %+v", i, ha[i], hb[i])
			}
		}
		t.Fatalf("layers differ (%d vs %d entries, %d vs %d bytes)", len(ha), len(hb), len(a), len(b))
	}
	t.Logf("%s: %d entries, layer %d bytes, identical", filepath.Base(src), len(readHeaders(t, a)), len(a))
}
