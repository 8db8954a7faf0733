package archive

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"testing"
)

// TestMain runs the tests as uid 0: directly when already root (real root, or root of a user
// namespace), otherwise re-executed under `unshare --user --map-root-user --mount`, which is
// how kiln itself runs without privileges, adding --map-auto (newuidmap and the user's
// /etc/subuid range) when the user has subordinate ids.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		os.Exit(m.Run())
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "finding the test binary:", err)
		os.Exit(1)
	}
	args := []string{"--user", "--map-root-user", "--mount"}
	if hasSubordinateIDs() {
		args = append(args, "--map-auto")
	}
	cmd := exec.Command("unshare", append(append(args, self), os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "re-executing the tests in a user namespace (needs unshare(1) from util-linux):", err)
		os.Exit(1)
	}
	os.Exit(0)
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
		f, err := os.Open(file)
		if err != nil {
			return false
		}
		found := false
		for s := bufio.NewScanner(f); s.Scan() && !found; {
			owner, _, _ := strings.Cut(s.Text(), ":")
			found = owner == u.Username || owner == u.Uid
		}
		f.Close()
		if !found {
			return false
		}
	}
	return true
}
