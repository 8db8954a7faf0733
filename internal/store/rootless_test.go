package store

import (
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// rootlessEnv marks a test binary re-run by TestRootless as an
// unprivileged user inside a user namespace.
const rootlessEnv = "KILN_STORE_TEST_ROOTLESS"

// rootlessTests are the tests re-run unprivileged.
const rootlessTests = "^(TestInUserNamespace|TestUnpack|TestConcurrentUnpackExtractsOnce|TestUnpackRejectsMismatch|TestKilledWritesLeaveNothingVisible|TestNamesMoveBetweenImages)$"

// TestRootless re-runs the unpack tests as the unprivileged users kiln-nosub
// (unshare --map-root-user: one id mapped, owners squashed) and kiln-sub
// (--map-auto: its /etc/subuid range mapped too, owners kept).
func TestRootless(t *testing.T) {
	if os.Getenv(rootlessEnv) != "" {
		t.Skip("already the rootless run")
	}
	if os.Geteuid() != 0 {
		t.Skip("switching to the test users needs root; run the suite as root (it re-runs itself unprivileged)")
	}
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing; remedy: apt-get install -y util-linux", tool)
		}
	}
	bin := copyTestBinary(t)
	tests := []struct {
		user  string
		flags []string
	}{
		{"kiln-nosub", []string{"--user", "--map-root-user"}},
		{"kiln-sub", []string{"--user", "--map-root-user", "--map-auto"}},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			u, err := user.Lookup(tt.user)
			if err != nil {
				t.Skipf("test user %s is missing (%v); remedy: useradd --system --create-home %s "+
					"(and for kiln-sub: echo kiln-sub:100000:65536 | tee -a /etc/subuid /etc/subgid)", tt.user, err, tt.user)
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			tmp := t.TempDir()
			if err := os.Chown(tmp, uid, gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Dir(tmp), 0o755); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--reuid=" + u.Uid, "--regid=" + u.Gid, "--clear-groups", "unshare"}, tt.flags...)
			args = append(args, bin, "-test.run="+rootlessTests, "-test.v", "-test.count=1")
			cmd := exec.Command("setpriv", args...)
			cmd.Env = append(os.Environ(), rootlessEnv+"=1", "TMPDIR="+tmp, "HOME="+tmp)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("tests as %s in a user namespace: %v\n%s", tt.user, err, out)
			}
			for _, name := range []string{"TestInUserNamespace", "TestUnpack", "TestConcurrentUnpackExtractsOnce", "TestKilledWritesLeaveNothingVisible"} {
				if !strings.Contains(string(out), "--- PASS: "+name+" ") {
					t.Fatalf("%s did not pass as %s:\n%s", name, tt.user, out)
				}
			}
		})
	}
}

// TestInUserNamespace proves the rootless run is really unprivileged: uid 0
// in a namespace that does not map the host's root.
func TestInUserNamespace(t *testing.T) {
	if os.Getenv(rootlessEnv) == "" {
		t.Skip("only meaningful in the rootless run started by TestRootless")
	}
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	first := strings.Fields(string(data))
	if os.Geteuid() != 0 || len(first) < 3 || first[1] == "0" {
		t.Fatalf("not root over an unprivileged mapping: euid %d, uid_map %q", os.Geteuid(), data)
	}
	t.Logf("uid_map: %s", strings.TrimSpace(string(data)))
}

// copyTestBinary copies the running test binary where unprivileged users
// can execute it (the build cache is root's alone).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's parent is private too; the test users need to pass through.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "store.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}
