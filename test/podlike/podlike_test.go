package podlike

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newTestPod prepares a pod from the busybox fixture, skipping when the
// machine cannot run one.
func newTestPod(t *testing.T, opts ...Option) *Pod {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run runc with a user namespace; remedy: run as root, as `make test` does")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc not installed; remedy: sudo test/setup.sh")
	}
	img := filepath.Join(FixtureDir, "busybox")
	if _, err := os.Stat(filepath.Join(img, "index.json")); err != nil {
		t.Skipf("busybox fixture missing (%v); remedy: sudo test/setup.sh", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	p, err := New(ctx, filepath.Join(dir, "pod"), append([]Option{WithImage(img)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPodShape boots busybox sh in the pod as 0 and as 1000 and checks the
// properties a `hostUsers: false` pod has.
func TestPodShape(t *testing.T) {
	p := newTestPod(t)
	script := strings.Join([]string{
		`echo "uidmap=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"`,
		`echo "id=$(id -u):$(id -g)"`,
		`echo "capbnd=$(grep CapBnd /proc/self/status | cut -f2)"`,
		`echo "keys=$(head -c 1 /proc/keys | wc -c)"`,
		`touch /sys/kiln-probe 2>/dev/null && echo sys=rw || echo sys=ro`,
		`echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo procsys=rw || echo procsys=ro`,
		`touch /store/probe-$(id -u) && echo store=rw || echo store=ro`,
		`echo "host=$(hostname)"`,
		`unshare -U -r -m sh -c 'echo nested=ok' 2>/dev/null || echo nested=fail`,
	}, "; ")
	tests := []struct {
		uid  int
		want []string
	}{
		{0, []string{"uidmap=0 1000000 65536", "id=0:0", "capbnd=00000000a80425fb", "keys=0", "sys=ro", "procsys=ro", "store=rw", "host=kiln-pod", "nested=ok"}},
		{1000, []string{"uidmap=0 1000000 65536", "id=1000:1000", "capbnd=00000000a80425fb", "sys=ro", "store=ro", "host=kiln-pod", "nested=ok"}},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, stderr, err := p.Run(ctx, tc.uid, "/bin/sh", "-c", script)
		cancel()
		if err != nil {
			t.Fatalf("uid %d: %v\n%s", tc.uid, err, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for _, w := range tc.want {
			if !contains(lines, w) {
				t.Errorf("uid %d: output lacks %q:\n%s", tc.uid, w, out)
			}
		}
	}
	// The pod's root owns the store as host id base+0.
	fi, err := os.Stat(filepath.Join(p.StoreDir(), "probe-0"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fileUID(fi); uid != p.HostID(0) {
		t.Errorf("file the pod's root wrote is host uid %d, want %d", uid, p.HostID(0))
	}
}

// TestUnmaskedProc checks WithUnmaskedProc, the procMount: Unmasked pod.
func TestUnmaskedProc(t *testing.T) {
	p := newTestPod(t, WithUnmaskedProc())
	out, stderr, err := p.Run(context.Background(), 0, "/bin/sh", "-c", "head -c 1 /proc/keys | wc -c")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if strings.TrimSpace(out) == "0" {
		t.Errorf("/proc/keys still masked with WithUnmaskedProc")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
