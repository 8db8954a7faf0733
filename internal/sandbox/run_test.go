package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// runSh runs script with /bin/sh in a sandbox on rootfs and returns its stdout.
func runSh(t *testing.T, spec Spec, script string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	spec.Args = []string{"/bin/sh", "-c", script}
	spec.Stdout, spec.Stderr = &stdout, &stderr
	err := Run(context.Background(), spec)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return stdout.String(), err
}

func TestRun(t *testing.T) {
	m := testMapping(t)
	rootfs := busyboxRootfs(t)
	hostSecret := filepath.Join(filepath.Dir(rootfs), "host-secret")
	if err := os.WriteFile(hostSecret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	os.WriteFile(filepath.Join(shared, "f"), []byte("from host\n"), 0o644)
	resolv, _ := os.ReadFile("/etc/resolv.conf")

	tests := []struct {
		name      string
		spec      Spec
		script    string
		want      string
		wantExit  *ExitError
		needsIDs  bool // needs ids other than 0 mapped
		wantError string
	}{
		{name: "echo", script: "echo hello", want: "hello\n"},
		{name: "exit code", script: "exit 3", wantExit: &ExitError{Code: 3}},
		{name: "signal", script: "kill -KILL $$", wantExit: &ExitError{Code: 137, Signal: "SIGKILL"}},
		{name: "env", spec: Spec{Env: []string{"FOO=bar"}}, script: `echo "$FOO $PATH $HOME"`,
			want: "bar " + defaultPath + " /root\n"},
		{name: "stdin", spec: Spec{Stdin: strings.NewReader("data\n")}, script: "cat", want: "data\n"},
		{name: "cwd created", spec: Spec{Dir: "/work/sub"}, script: "pwd", want: "/work/sub\n"},
		{name: "default user", script: "id -u; id -g; id -G", want: "0\n0\n0\n"},
		{name: "user by name", spec: Spec{User: "alice"}, script: "id -u; id -g; id -G; echo $HOME",
			want: "1000\n1000\n1000 2000 3000\n/home/alice\n", needsIDs: true},
		{name: "user uid:gid", spec: Spec{User: "1001:3000"}, script: "id -u; id -g; id -G",
			want: "1001\n3000\n3000 2000\n", needsIDs: true},
		{name: "user name:group", spec: Spec{User: "bob:ops"}, script: "id -u; id -g",
			want: "1001\n3000\n", needsIDs: true},
		{name: "unknown uid", spec: Spec{User: "4242"}, script: "id -u; id -g", want: "4242\n0\n", needsIDs: true},
		{name: "unknown user", spec: Spec{User: "nobody"}, script: "true", wantError: `resolving user "nobody"`},
		{name: "missing command", spec: Spec{}, script: "", wantError: "executable file not found"},
		{name: "fresh proc", script: "grep PPid: /proc/$$/status; tr '\\0' ' ' </proc/1/cmdline; echo; set -- /proc/[0-9]*; echo $#",
			want: "PPid:\t1\nkiln-sandbox-init \n2\n"},
		{name: "hostname", spec: Spec{Hostname: "kiln-test"}, script: "hostname; cat /etc/hostname; grep -c kiln-test /etc/hosts",
			want: "kiln-test\nkiln-test\n1\n"},
		{name: "resolv.conf", script: "cat /etc/resolv.conf", want: string(resolv)},
		{name: "network none", spec: Spec{Network: "none"}, script: "ls /sys/class/net; cat /sys/class/net/lo/flags",
			want: "lo\n0x9\n"},
		{name: "host files hidden", script: "test -e " + hostSecret + " && echo visible; ls /etc", want: "group\nhostname\nhosts\npasswd\nresolv.conf\n"},
		{name: "dev", script: "ls /dev; echo x >/dev/null; head -c 4 /dev/zero | wc -c",
			want: "fd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n4\n"},
		{name: "cannot signal caller", script: fmt.Sprintf("kill -0 %d 2>/dev/null && echo reachable; echo done", os.Getpid()),
			want: "done\n"},
		{name: "root capabilities", script: "grep -e CapEff -e CapBnd /proc/self/status",
			want: "CapEff:\t" + capMask(runCapabilities()) + "\nCapBnd:\t" + capMask(runCapabilities()) + "\n"},
		{name: "user capabilities", spec: Spec{User: "alice"}, script: "grep CapEff /proc/self/status",
			want: "CapEff:\t0000000000000000\n", needsIDs: true},
		{name: "no_new_privs", script: "grep NoNewPrivs /proc/self/status", want: "NoNewPrivs:\t1\n"},
		{name: "nosync", spec: Spec{NoSync: true}, script: "grep Seccomp: /proc/self/status; sync; echo $?", want: "Seccomp:\t2\n0\n"},
		{name: "sync allowed", script: "grep Seccomp: /proc/self/status", want: "Seccomp:\t" + seccompMode() + "\n"},
		{name: "mounts", spec: Spec{Mounts: []Mount{
			{Source: shared, Target: "/mnt/shared", Type: "bind", ReadOnly: true},
			{Target: "/scratch", Type: "tmpfs"},
			{Source: shared, Target: "/dev/pipes", Type: "bind", ReadOnly: true},
			{Source: shared, Target: "/scratch/sub", Type: "bind"},
		}}, script: "cat /mnt/shared/f; touch /mnt/shared/x 2>/dev/null || echo ro; touch /scratch/y && echo rw; cat /dev/pipes/f /scratch/sub/f",
			want: "from host\nro\nrw\nfrom host\nfrom host\n"},
	}
	if m.Size() == 1 {
		tests = append(tests, struct {
			name      string
			spec      Spec
			script    string
			want      string
			wantExit  *ExitError
			needsIDs  bool
			wantError string
		}{name: "unmapped user", spec: Spec{User: "alice"}, script: "true", wantError: "id 1000 is not mapped"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "fresh proc" && os.Getenv(envTestMasked) != "" {
				t.Skip("/proc is masked here, so the sandbox binds the caller's /proc; TestRunMaskedProc covers it")
			}
			if tc.needsIDs && m.Size() == 1 {
				t.Skipf("mapping %q maps only uid 0: add /etc/subuid and /etc/subgid ranges for this user to run it", m.Mode)
			}
			spec := tc.spec
			spec.Rootfs = rootfs
			var got string
			var err error
			if tc.name == "missing command" {
				spec.Args = []string{"no-such-command"}
				err = Run(context.Background(), spec)
			} else {
				got, err = runSh(t, spec, tc.script)
			}
			switch {
			case tc.wantError != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantError)
				}
				return
			case tc.wantExit != nil:
				var ee *ExitError
				if !errors.As(err, &ee) || *ee != *tc.wantExit {
					t.Fatalf("error = %#v, want %#v", err, tc.wantExit)
				}
				return
			case err != nil:
				t.Fatalf("Run: %v", err)
			}
			if got != tc.want {
				t.Errorf("stdout = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRunLeavesRootfsClean(t *testing.T) {
	testMapping(t)
	rootfs := busyboxRootfs(t)
	os.Remove(filepath.Join(rootfs, "tmp"))
	before := treeOf(t, rootfs)
	shared := t.TempDir()
	spec := Spec{Rootfs: rootfs, Mounts: []Mount{{Source: shared, Target: "/mnt/a/b", Type: "bind"}}}
	if _, err := runSh(t, spec, "echo changed >/etc/hosts; echo x >/etc/hostname; ls /proc /sys /dev >/dev/null"); err != nil {
		t.Fatal(err)
	}
	if after := treeOf(t, rootfs); !reflect.DeepEqual(before, after) {
		t.Errorf("rootfs changed:\nbefore %v\nafter  %v", before, after)
	}
	// Created parents the RUN wrote into are its own writes and stay; the
	// mountpoint itself goes.
	if _, err := runSh(t, spec, "echo kept >/mnt/a/file"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "mnt/a/file")); err != nil || string(b) != "kept\n" {
		t.Errorf("RUN's write under a created parent: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "mnt/a/b")); err == nil {
		t.Errorf("mountpoint /mnt/a/b was left in the rootfs")
	}
}

// TestRunDanglingSymlinks gives the rootfs mountpoints that are dangling
// symlinks, one absolute and pointing at a real host directory: mounts must
// land inside the rootfs, the host directory must stay untouched, and the
// rootfs must be left as it was.
func TestRunDanglingSymlinks(t *testing.T) {
	testMapping(t)
	rootfs := busyboxRootfs(t)
	hostDir := t.TempDir()
	if err := os.Symlink(filepath.Join(hostDir, "dev"), filepath.Join(rootfs, "dev")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../run/resolve/stub.conf", filepath.Join(rootfs, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	before := treeOf(t, rootfs)
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	got, err := runSh(t, Spec{Rootfs: rootfs}, "cat /etc/resolv.conf; test -c /dev/null && echo dev")
	if err != nil {
		t.Fatal(err)
	}
	if want := string(resolv) + "dev\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if entries, _ := os.ReadDir(hostDir); len(entries) != 0 {
		t.Errorf("host dir %s got %v: a mount escaped the rootfs", hostDir, entries)
	}
	if after := treeOf(t, rootfs); !reflect.DeepEqual(before, after) {
		t.Errorf("rootfs changed:\nbefore %v\nafter  %v", before, after)
	}
}

// hostHasProcess reports whether any process visible in /proc has argv exactly args.
func hostHasProcess(t *testing.T, args ...string) bool {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range dirs {
		if b, err := os.ReadFile(p); err == nil && string(b) == want {
			return true
		}
	}
	return false
}

func TestRunKillsLeftovers(t *testing.T) {
	testMapping(t)
	rootfs := busyboxRootfs(t)
	if _, err := runSh(t, Spec{Rootfs: rootfs}, "sleep 31337 >/dev/null 2>&1 & echo started"); err != nil {
		t.Fatal(err)
	}
	if hostHasProcess(t, "sleep", "31337") {
		t.Errorf("background sleep 31337 survived the sandbox")
	}
}

// TestRunEndlessStdin gives the process a stdin that never ends and checks
// Run still returns once the process exited.
func TestRunEndlessStdin(t *testing.T) {
	testMapping(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	err := Run(context.Background(), Spec{Rootfs: busyboxRootfs(t), Args: []string{"true"}, Stdin: pr})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRunContextCancel(t *testing.T) {
	testMapping(t)
	rootfs := busyboxRootfs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Spec{Rootfs: rootfs, Args: []string{"/bin/sh", "-c", "sleep 31338 & echo started; wait"}, Stdout: pw})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "started\n" {
		t.Fatalf("reading start line: %q, %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v, want context.Canceled", err)
	}
	if hostHasProcess(t, "sleep", "31338") {
		t.Errorf("sleep 31338 survived cancellation")
	}
}
