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
const podHostID = 300000

// TestRunInPodLikeContainer runs the sandbox tests inside a runc container set
// up like a Kubernetes pod with hostUsers: false: uid 0 in a user namespace of
// 65536 ids, containerd's default capabilities, no_new_privs, masked and
// read-only /proc paths, read-only /sys. kiln must pick the full mapping and
// fall back to a bound /proc.
func TestRunInPodLikeContainer(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv(envMode) != "" {
		t.Skip("needs to run as root on the host, to start a runc container")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc not found: apt-get install runc")
	}
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
	masked := "/proc/timer_list"
	writePodConfig(t, bundle, runc, []string{
		"/sandbox.test", "-test.v", "-test.count=1",
		"-test.run=^(TestHelperReportMapping|TestRun|TestRunLeavesRootfsClean|TestRunKillsLeftovers|TestRunContextCancel|TestRunOverlay|TestRunDanglingSymlinks|TestRunMaskedProc)$",
	}, []string{
		"PATH=/bin", "TMPDIR=/tmp", "HOME=/root", envTestUserns + "=1", envTestHelper + "=mapping", envTestMasked + "=" + masked,
	})
	id := fmt.Sprintf("kiln-sandbox-test-%d", os.Getpid())
	cmd := exec.Command(runc, "run", "--bundle", bundle, id)
	out, err := cmd.CombinedOutput()
	exec.Command(runc, "delete", "--force", id).Run()
	t.Log(string(out))
	if err != nil {
		t.Fatalf("tests in the pod-like container failed: %v", err)
	}
	r := parseChildReport(t, string(out))
	if want := []IDRange{{0, 0, 65536}}; r.Mapping.Mode != ModeFull || !reflect.DeepEqual(r.UIDs, want) {
		t.Errorf("mapping %s %v, want full %v", r.Mapping.Mode, r.UIDs, want)
	}
	for _, name := range []string{"TestRun", "TestRunOverlay", "TestRunMaskedProc"} {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass in the container", name)
		}
	}
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
func writePodConfig(t *testing.T, bundle, runc string, args, env []string) {
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
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
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
