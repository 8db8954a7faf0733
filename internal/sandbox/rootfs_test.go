package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRunOverlay runs a RUN on a real overlay mount and checks that the upper
// dir holds only what the RUN wrote: none of the sandbox's own mountpoints.
func TestRunOverlay(t *testing.T) {
	testMapping(t)
	lower := busyboxRootfs(t)
	for _, d := range []string{"dev", "proc", "sys"} { // as in real images
		if err := os.Mkdir(filepath.Join(lower, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	base := t.TempDir()
	dirs := map[string]string{}
	for _, n := range []string{"upper", "work", "merged"} {
		dirs[n] = filepath.Join(base, n)
		if err := os.Mkdir(dirs[n], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,userxattr", lower, dirs["upper"], dirs["work"])
	if err := unix.Mount("overlay", dirs["merged"], "overlay", 0, opts); err != nil {
		t.Skipf("cannot mount overlayfs here (%v): run on a kernel >= 5.11 with the test dir off overlayfs", err)
	}
	defer unix.Unmount(dirs["merged"], unix.MNT_DETACH)
	spec := Spec{Rootfs: dirs["merged"], Hostname: "overlay", Mounts: []Mount{
		{Target: "/var/cache/x", Type: "tmpfs"},
		{Source: base, Target: "/dev/pipes", Type: "bind", ReadOnly: true},
	}}
	if _, err := runSh(t, spec, "echo new >/tmp/new; echo x >/etc/hosts; echo y >/var/cache/x/z"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(dirs["merged"], 0); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.Walk(dirs["upper"], func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dirs["upper"] {
			rel, _ := filepath.Rel(dirs["upper"], p)
			got = append(got, rel)
		}
		return nil
	})
	sort.Strings(got)
	// etc is copied up (unchanged) when /etc/hostname had to be created in it:
	// the snapshot diff sees an unchanged directory. Nothing else may be there.
	want := []string{"etc", "tmp", "tmp/new"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("upper dir = %v, want %v", got, want)
	}
}

// envTestMasked names the /proc file the parent masked before starting a
// re-run test binary, as a container runtime does.
const envTestMasked = "KILN_SANDBOX_TEST_MASKED"

// TestRunMaskedProc runs (through TestRunMaskedProcUnprivileged) in a user
// namespace whose /proc has a file masked by a more privileged namespace, as
// in a container: the kernel then refuses a fresh procfs, and the sandbox must
// fall back to a read-only bind of /proc. Detect must say so.
func TestRunMaskedProc(t *testing.T) {
	testMapping(t)
	masked := os.Getenv(envTestMasked)
	if masked == "" {
		t.Skip("needs a /proc masked from outside the user namespace; TestRunMaskedProcUnprivileged runs it so")
	}
	got, err := runSh(t, Spec{Rootfs: busyboxRootfs(t)}, `awk '$5 == "/proc" { split($6, o, ","); print o[1] }' /proc/self/mountinfo | head -1; test -r /proc/self/status && echo readable`)
	if err != nil {
		t.Fatal(err)
	}
	if got != "ro\nreadable\n" {
		t.Errorf("got %q, want /proc read-only and readable", got)
	}
	// The bound /proc shows the builder's processes: the RUN must not reach
	// into them (environ, root, namespaces).
	got, err = runSh(t, Spec{Rootfs: busyboxRootfs(t)}, fmt.Sprintf(
		"cat /proc/%[1]d/environ >/dev/null 2>&1 && echo environ; ls /proc/%[1]d/root/ >/dev/null 2>&1 && echo root; "+
			"readlink /proc/%[1]d/ns/mnt >/dev/null 2>&1 && echo ns; echo done", os.Getpid()))
	if err != nil || got != "done\n" {
		t.Errorf("RUN reached into the builder through the bound /proc: %q, %v", got, err)
	}
	r := Detect(context.Background(), "")
	for _, c := range r.Checks {
		if c.Name == "proc" && (c.OK || !strings.Contains(c.Remedy, "procMount: Unmasked")) {
			t.Errorf("Detect proc check = %+v, want a failure with the procMount remedy", c)
		}
	}
}

func TestRunMaskedProcUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to mask /proc and create the test users")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not found: apt-get install util-linux")
	}
	masked := ""
	for _, p := range []string{"/proc/kcore", "/proc/timer_list", "/proc/keys"} {
		if _, err := os.Stat(p); err == nil {
			masked = p
			break
		}
	}
	if masked == "" {
		t.Skip("none of /proc/kcore, /proc/timer_list, /proc/keys exists to mask")
	}
	for _, u := range []testUser{{Name: "root"}, ensureTestUser(t, "kiln-sbx", 200000)} {
		t.Run(u.Name, func(t *testing.T) {
			cmd := testBinaryAs(t, u, true, "^TestRunMaskedProc$", envTestMasked+"="+masked)
			cmd.Args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
				`mount --bind /dev/null "$0" && exec "$@"`, masked}, cmd.Args...)
			cmd.Path = "/usr/bin/unshare"
			if p, err := exec.LookPath("unshare"); err == nil {
				cmd.Path = p
			}
			out, err := cmd.CombinedOutput()
			t.Log(string(out))
			if err != nil {
				t.Fatalf("masked-proc test failed as %s: %v", u.Name, err)
			}
			if !strings.Contains(string(out), "--- PASS: TestRunMaskedProc") {
				t.Errorf("TestRunMaskedProc did not run")
			}
		})
	}
}
