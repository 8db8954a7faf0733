package snapshot

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"syscall"
	"testing"
)

// inNamespaceEnv is set in the re-executed test binary.
const inNamespaceEnv = "KILN_SNAPSHOT_TEST_IN_USERNS"

// TestMain runs the suite where kiln runs: as uid 0 of a user namespace. Started as real root
// in the initial namespace, it runs the suite there first, then again in a new user + mount
// namespace mapping 0-65535 to host ids 400000-465535. Started as an unprivileged user, it
// re-executes under unshare(1) with --map-root-user, plus --map-auto (newuidmap, the user's
// /etc/subuid range) when the user has one. Already inside a user namespace, it just runs.
func TestMain(m *testing.M) {
	if os.Getenv(inNamespaceEnv) != "" || !inInitialUserNamespace() {
		os.Exit(m.Run())
	}
	code := 0
	if os.Geteuid() == 0 {
		fmt.Println("== snapshot suite as real root, initial namespaces")
		code = m.Run()
	}
	fmt.Println("== snapshot suite as uid 0 of a new user namespace")
	if err := reexecInUserNamespace(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		} else {
			code = 1
		}
	}
	os.Exit(code)
}

// inInitialUserNamespace reports whether uid_map is the identity map of the whole id space.
func inInitialUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return strings.Join(strings.Fields(string(b)), " ") == "0 0 4294967295"
}

func reexecInUserNamespace() error {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("/proc/self/exe", childArgs()...)
		ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 400000, Size: 65536}}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
			UidMappings: ids,
			GidMappings: ids,
			Credential:  &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		}
	} else {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the test binary: %w", err)
		}
		args := []string{"--user", "--mount", "--map-root-user"}
		if hasSubordinateIDs() {
			args = append(args, "--map-auto")
		}
		cmd = exec.Command("unshare", append(append(args, self), childArgs()...)...)
	}
	cmd.Env = append(os.Environ(), inNamespaceEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running the suite in a user namespace: %w", err)
	}
	return nil
}

// hasSubordinateIDs reports whether the current user has /etc/subuid and /etc/subgid ranges
// and newuidmap is installed.
func hasSubordinateIDs() bool {
	if _, err := exec.LookPath("newuidmap"); err != nil {
		return false
	}
	u, err := user.Current()
	if err != nil {
		return false
	}
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		if !fileHasOwner(file, u.Username, u.Uid) {
			return false
		}
	}
	return true
}

func fileHasOwner(file, name, id string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		owner, _, _ := strings.Cut(s.Text(), ":")
		if owner == name || owner == id {
			return true
		}
	}
	return false
}

// childArgs are the test binary's arguments for its re-run in a user namespace, without
// -test.testlogfile: go test's log file lives in a directory of the real root, which the
// namespace's root cannot write (go test passes it when test caching is on).
func childArgs() []string {
	var out []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.testlogfile") {
			out = append(out, a)
		}
	}
	return out
}
