package sandbox

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Environment variables of the test binary re-run as another user.
const (
	envTestUserns = "KILN_SANDBOX_TEST_USERNS" // "1": enter a user namespace before running tests
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001:Bob:/home/bob:/bin/sh
`

const testGroup = `root:x:0:
alice:x:1000:
bob:x:1001:
devs:x:2000:alice,bob
ops:x:3000:alice
`

// busyboxRootfs builds a rootfs from the host's static busybox: /bin/busybox,
// a link per applet, /etc/passwd and /etc/group, /tmp. It has no /proc, /dev,
// /sys or /etc/hostname, so Run has to create (and then remove) them.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not found: apt-get install busybox-static")
	}
	out, err := exec.Command("file", "-L", bb).Output()
	if err == nil && !bytes.Contains(out, []byte("statically linked")) {
		t.Skipf("%s is not statically linked: apt-get install busybox-static", bb)
	}
	return busyboxRootfsAt(t, filepath.Join(t.TempDir(), "rootfs"))
}

// busyboxRootfsAt is busyboxRootfs in a directory the caller chose.
func busyboxRootfsAt(t *testing.T, root string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not found: apt-get install busybox-static")
	}
	for _, d := range []string{"bin", "etc", "tmp", "home/alice"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, name := range strings.Fields(string(list)) {
		if name != "busybox" {
			if err := os.Symlink("busybox", filepath.Join(root, "bin", name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, content := range map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// treeOf lists every path under dir with its type, for before/after comparisons.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+fi.Mode().Type().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testMapping returns the mapping the test process runs under: the one in
// effect when TestMain entered a user namespace, else the host's (root).
func testMapping(t *testing.T) Mapping {
	t.Helper()
	if v, ok := os.LookupEnv(envMode); ok {
		var m Mapping
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if os.Geteuid() != 0 {
		t.Skip("sandbox tests need root or a user namespace: run as root, or set " + envTestUserns + "=1")
	}
	return Mapping{Mode: "host-root", UIDs: []IDRange{{0, 0, 1 << 32}}}
}

// testUser is an account the tests run the test binary as.
type testUser struct {
	Name     string
	UID, GID int
	Setpriv  []string // extra setpriv options, e.g. to drop capabilities
}

// ensureTestUser creates the system user name if missing, with subordinate id
// ranges at subStart or, when subStart is 0, without any.
func ensureTestUser(t *testing.T, name string, subStart int) testUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating test users needs root")
	}
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		subs, err := readSubIDs(f, name, uid)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case subStart == 0 && len(subs) > 0:
			t.Fatalf("%s has ranges in %s but this test needs a user without", name, f)
		case subStart != 0 && len(subs) == 0:
			line := name + ":" + strconv.Itoa(subStart) + ":65536\n"
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fh.WriteString(line)
			fh.Close()
		}
	}
	return testUser{Name: name, UID: uid, GID: gid}
}

// runTestBinaryAs runs a copy of this test binary as u (through setpriv unless
// u is root) with the given -test.run pattern, with a TMPDIR u owns, and
// returns its combined output. With userns the tests run inside
// ReexecInUserNamespace, as kiln runs its builds.
func runTestBinaryAs(t *testing.T, u testUser, userns bool, pattern string, extraEnv ...string) (string, error) {
	t.Helper()
	out, err := testBinaryAs(t, u, userns, pattern, extraEnv...).CombinedOutput()
	return string(out), err
}

// testBinaryAs prepares the command runTestBinaryAs runs.
func testBinaryAs(t *testing.T, u testUser, userns bool, pattern string, extraEnv ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not found: apt-get install util-linux")
	}
	if os.Getenv(envTestUserns) != "" || os.Getenv(envMode) != "" {
		t.Skip("already running as a re-run test binary")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kiln-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "sandbox.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	args := []string{bin, "-test.run=" + pattern, "-test.v", "-test.count=1"}
	if u.UID != 0 || len(u.Setpriv) > 0 {
		sp := append([]string{"setpriv", "--reuid=" + strconv.Itoa(u.UID), "--regid=" + strconv.Itoa(u.GID), "--clear-groups"}, u.Setpriv...)
		args = append(sp, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = tmp
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp, "HOME=" + tmp}, extraEnv...)
	if userns {
		cmd.Env = append(cmd.Env, envTestUserns+"=1")
	}
	return cmd
}
