package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// podHostID is where the pod-like container's 65536 ids start on the host.
const podHostID = 500000 // clear of the subordinate ranges test users get (100000-365535)

// TestRunInPodLikeContainer runs the sandbox tests inside runc containers set
// up like Kubernetes pods with hostUsers: false: a user namespace of 65536
// ids, no_new_privs, masked and read-only /proc paths, read-only /sys; once as
// uid 0 with containerd's default capabilities (kiln must pick the full
// mapping), once as uid 1000 without capabilities (the single mapping). Both
// fall back to a bound /proc, since /proc is masked.
func TestRunInPodLikeContainer(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to start a runc container")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc not found: apt-get install runc")
	}
	defaultCaps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
	tests := []struct {
		name string
		uid  int
		caps []string
		mode string
		uids []IDRange
	}{
		{"root with default capabilities", 0, defaultCaps, ModeFull, []IDRange{{0, 0, 65536}}},
		{"uid 1000 without capabilities", 1000, []string{}, ModeSingle, []IDRange{{0, 1000, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := runInPod(t, runc, tc.uid, tc.caps)
			r := parseChildReport(t, out)
			if r.Mapping.Mode != tc.mode || !reflect.DeepEqual(r.UIDs, tc.uids) {
				t.Errorf("mapping %s %v, want %s %v", r.Mapping.Mode, r.UIDs, tc.mode, tc.uids)
			}
			for _, name := range []string{"TestRun", "TestRunOverlay", "TestRunMaskedProc"} {
				if !strings.Contains(out, "--- PASS: "+name+" ") {
					t.Errorf("%s did not pass in the container", name)
				}
			}
		})
	}
}

// runInPod runs the sandbox tests in a pod-like runc container as uid with
// caps, and returns their output.
func runInPod(t *testing.T, runc string, uid int, caps []string) string {
	t.Helper()
	bundle, err := os.MkdirTemp("", "kiln-podlike-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bundle)
	os.Chmod(bundle, 0o755)
	rootfs := busyboxRootfsAt(t, filepath.Join(bundle, "rootfs"))
	copyTestBinaryWithLibs(t, rootfs)
	if err := chownTree(rootfs, podHostID); err != nil {
		t.Fatal(err)
	}
	writePodConfig(t, bundle, runc, uid, caps, []string{
		"/sandbox.test", "-test.v", "-test.count=1",
		"-test.run=^(TestHelperReportMapping|TestRun|TestRunLeavesRootfsClean|TestRunKillsLeftovers|TestRunContextCancel|TestRunOverlay|TestRunDanglingSymlinks|TestRunMaskedProc)$",
	}, []string{
		"PATH=/bin", "TMPDIR=/tmp", "HOME=/tmp", envTestUserns + "=1", envTestHelper + "=mapping", envTestMasked + "=/proc/timer_list",
	})
	id := fmt.Sprintf("kiln-sandbox-test-%d-%d", os.Getpid(), uid)
	out, err := exec.Command(runc, "run", "--bundle", bundle, id).CombinedOutput()
	exec.Command(runc, "delete", "--force", id).Run()
	t.Log(string(out))
	if err != nil {
		t.Fatalf("tests in the pod-like container failed: %v", err)
	}
	return string(out)
}

// copyTestBinaryWithLibs copies this test binary to /sandbox.test in rootfs,
// with the shared libraries ldd says it needs.
func copyTestBinaryWithLibs(t *testing.T, rootfs string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{self: "/sandbox.test"}
	if out, err := exec.Command("ldd", self).Output(); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			for _, f := range strings.Fields(sc.Text()) {
				if filepath.IsAbs(f) {
					files[f] = f
				}
			}
		}
	}
	for src, dst := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst = filepath.Join(rootfs, dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func chownTree(dir string, id int) error {
	return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, id, id)
	})
}

// writePodConfig writes bundle/config.json: runc's default spec turned into
// what a hostUsers: false pod gets.
func writePodConfig(t *testing.T, bundle, runc string, uid int, caps, args, env []string) {
	t.Helper()
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	p := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["user"] = map[string]any{"uid": uid, "gid": uid}
	proc["args"] = args
	proc["env"] = env
	proc["capabilities"] = map[string]any{"bounding": caps, "effective": caps, "permitted": caps}
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	var mounts []any
	for _, m := range spec["mounts"].([]any) {
		if m.(map[string]any)["destination"] != "/sys/fs/cgroup" {
			mounts = append(mounts, m)
		}
	}
	spec["mounts"] = mounts
	linux := spec["linux"].(map[string]any)
	idMap := []any{map[string]any{"containerID": 0, "hostID": podHostID, "size": 65536}}
	linux["uidMappings"], linux["gidMappings"] = idMap, idMap
	linux["namespaces"] = append(linux["namespaces"].([]any), map[string]any{"type": "user"})
	out, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
