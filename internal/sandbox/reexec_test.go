package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// envTestHelper selects what TestHelperReportMapping does in a re-run binary.
const envTestHelper = "KILN_SANDBOX_TEST_HELPER"

// TestHelperReportMapping is not a test on its own: TestReexecModes re-runs the
// test binary with it, in a user namespace, to print what the child sees.
func TestHelperReportMapping(t *testing.T) {
	if os.Getenv(envTestHelper) != "mapping" {
		t.Skip("helper of TestReexecModes; runs only when re-executed by it")
	}
	m, err := ReexecInUserNamespace() // in the child: returns the mapping at once
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := json.Marshal(m)
	uidMap, _ := os.ReadFile("/proc/self/uid_map")
	gidMap, _ := os.ReadFile("/proc/self/gid_map")
	uids, _ := parseIDMap(strings.NewReader(string(uidMap)))
	gids, _ := parseIDMap(strings.NewReader(string(gidMap)))
	ee, _ := json.Marshal(struct {
		Mapping    json.RawMessage
		UIDs, GIDs []IDRange
		Setgroups  string
		EUID       int
	}{enc, uids, gids, readProcValue("/proc/self/setgroups"), os.Geteuid()})
	fmt.Printf("\nREPORT %s\n", ee)
}

type childReport struct {
	Mapping    Mapping
	UIDs, GIDs []IDRange
	Setgroups  string
	EUID       int
}

func parseChildReport(t *testing.T, out string) childReport {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "REPORT "); ok {
			var r childReport
			if err := json.Unmarshal([]byte(v), &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("no REPORT line in child output:\n%s", out)
	return childReport{}
}

func TestReexecModes(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to create the test users and run as them")
	}
	hostUIDs, err := readIDMap("/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	sbx := ensureTestUser(t, "kiln-sbx", 200000)
	nosub := ensureTestUser(t, "kiln-nosub", 0)
	tests := []struct {
		name      string
		user      testUser
		mode      string
		uids      []IDRange
		gids      []IDRange
		setgroups string
	}{
		{"full as root", testUser{Name: "root"}, ModeFull, identityOf(hostUIDs), nil, "allow"},
		{"subuid as kiln-sbx", sbx, ModeSubuid,
			[]IDRange{{0, sbx.UID, 1}, {1, 200000, 65536}}, []IDRange{{0, sbx.GID, 1}, {1, 200000, 65536}}, "allow"},
		{"single as root without CAP_SETUID", testUser{Name: "root", Setpriv: []string{"--bounding-set=-setuid,-setgid"}}, ModeSingle,
			[]IDRange{{0, 0, 1}}, []IDRange{{0, 0, 1}}, "deny"},
		{"single as kiln-nosub", nosub, ModeSingle,
			[]IDRange{{0, nosub.UID, 1}}, []IDRange{{0, nosub.GID, 1}}, "deny"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runTestBinaryAs(t, tc.user, true, "^TestHelperReportMapping$", envTestHelper+"=mapping")
			if err != nil {
				t.Fatalf("child failed: %v\n%s", err, out)
			}
			r := parseChildReport(t, out)
			if r.Mapping.Mode != tc.mode || r.EUID != 0 || r.Setgroups != tc.setgroups {
				t.Errorf("mode %q euid %d setgroups %q, want %q 0 %q", r.Mapping.Mode, r.EUID, r.Setgroups, tc.mode, tc.setgroups)
			}
			if !reflect.DeepEqual(r.UIDs, tc.uids) {
				t.Errorf("uid_map %v, want %v", r.UIDs, tc.uids)
			}
			if tc.gids != nil && !reflect.DeepEqual(r.GIDs, tc.gids) {
				t.Errorf("gid_map %v, want %v", r.GIDs, tc.gids)
			}
			if !reflect.DeepEqual(r.Mapping.UIDs, r.UIDs) {
				t.Errorf("Mapping.UIDs %v disagrees with the kernel's uid_map %v", r.Mapping.UIDs, r.UIDs)
			}
			if tc.mode == ModeSingle && !strings.Contains(out, "warning") {
				t.Errorf("single mapping printed no warning:\n%s", out)
			}
		})
	}
}

// TestRunUnprivileged runs the Run tests again as users without privileges,
// inside ReexecInUserNamespace, with and without subordinate ranges.
func TestRunUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to create the test users and run as them")
	}
	for _, u := range []testUser{ensureTestUser(t, "kiln-sbx", 200000), ensureTestUser(t, "kiln-nosub", 0)} {
		t.Run(u.Name, func(t *testing.T) {
			out, err := runTestBinaryAs(t, u, true, "^(TestRun|TestRunLeavesRootfsClean|TestRunKillsLeftovers|TestRunContextCancel|TestRunOverlay|TestRunDanglingSymlinks)$")
			t.Log(out)
			if err != nil {
				t.Fatalf("Run tests failed as %s: %v", u.Name, err)
			}
		})
	}
}

// TestDetect checks the report for the current process; TestDetectUnprivileged
// re-runs it as the test users.
func TestDetect(t *testing.T) {
	r := Detect(context.Background(), filepath.Join(t.TempDir(), "store/not/yet"))
	t.Log("\n" + r.String())
	want := os.Getenv("KILN_SANDBOX_TEST_WANT_MODE")
	if want == "" {
		if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
			t.Skip("run as root on the host, or through TestDetectUnprivileged")
		}
		want = ModeFull
	}
	if r.Mapping.Mode != want || !r.MappingOK {
		t.Errorf("mapping %q ok=%v, want %q ok", r.Mapping.Mode, r.MappingOK, want)
	}
	got := map[string]bool{}
	for _, c := range r.Checks {
		got[c.Name] = c.OK
		if !c.OK && c.Remedy == "" {
			t.Errorf("check %q failed without a remedy", c.Name)
		}
	}
	for _, name := range []string{"user namespaces", "overlay", "proc", "seccomp", "apparmor"} {
		if !got[name] {
			t.Errorf("check %q: not ok on this machine, where it is known to work", name)
		}
	}
	if want != ModeFull {
		if ok, present := got["subuid/subgid"]; !present || ok != (want == ModeSubuid) {
			t.Errorf("subuid/subgid check ok=%v present=%v for mode %s", ok, present, want)
		}
	}
}

func TestDetectUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to create the test users and run as them")
	}
	for _, tc := range []struct {
		user testUser
		mode string
	}{{ensureTestUser(t, "kiln-sbx", 200000), ModeSubuid}, {ensureTestUser(t, "kiln-nosub", 0), ModeSingle}} {
		t.Run(tc.user.Name, func(t *testing.T) {
			out, err := runTestBinaryAs(t, tc.user, false, "^TestDetect$", "KILN_SANDBOX_TEST_WANT_MODE="+tc.mode)
			t.Log(out)
			if err != nil {
				t.Fatalf("TestDetect failed as %s: %v", tc.user.Name, err)
			}
		})
	}
}

// TestHelperAwaitSignal is not a test on its own: TestReexecForwardsSignals
// re-runs the test binary with it.
func TestHelperAwaitSignal(t *testing.T) {
	if os.Getenv(envTestHelper) != "signal" {
		t.Skip("helper of TestReexecForwardsSignals; runs only when re-executed by it")
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	fmt.Println("READY")
	<-c
	os.Exit(42)
}

func TestReexecForwardsSignals(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to create the test users and run as them")
	}
	for _, u := range []testUser{{Name: "root"}, ensureTestUser(t, "kiln-sbx", 200000)} {
		t.Run(u.Name, func(t *testing.T) {
			cmd := testBinaryAs(t, u, true, "^TestHelperAwaitSignal$", envTestHelper+"=signal")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			for sc.Scan() && sc.Text() != "READY" {
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, stdout)
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 42 {
				t.Fatalf("parent exit = %v, want status 42 from the child that got SIGTERM", err)
			}
		})
	}
}
