package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// User is an account the suite runs builders as. The three users stand for
// kiln's three id-mapping modes (see ARCHITECTURE.md, "Rootless execution model").
type User string

const (
	// Root is uid 0 on the host.
	Root User = "root"
	// SubUser is unprivileged with 65536 subordinate ids in /etc/subuid and /etc/subgid.
	SubUser User = "kiln-sub"
	// NoSubUser is unprivileged with no subordinate ids: a single-id mapping.
	NoSubUser User = "kiln-nosub"
)

// allUsers is the default user list of a corpus case.
var allUsers = []User{Root, SubUser, NoSubUser}

// account is the passwd entry of a User.
type account struct {
	uid, gid int
	home     string
}

// lookup resolves u, skipping t when the account does not exist.
func (u User) lookup(t *testing.T) account {
	t.Helper()
	pw, err := user.Lookup(string(u))
	if err != nil {
		t.Skipf("test user %s missing (%v); remedy: sudo test/setup.sh", u, err)
	}
	uid, _ := strconv.Atoi(pw.Uid)
	gid, _ := strconv.Atoi(pw.Gid)
	return account{uid: uid, gid: gid, home: pw.HomeDir}
}

// command returns a command that runs name as u in dir with a clean
// environment (HOME, USER, PATH, XDG_RUNTIME_DIR) plus extraEnv.
func (u User) command(ctx context.Context, t *testing.T, dir string, extraEnv []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	a := u.lookup(t)
	env := []string{
		"HOME=" + a.home,
		"USER=" + string(u),
		"LOGNAME=" + string(u),
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	var cmd *exec.Cmd
	if u == Root {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		needRoot(t)
		env = append(env, "XDG_RUNTIME_DIR="+userDir(t, u, "run"))
		setpriv := []string{
			"--reuid=" + strconv.Itoa(a.uid), "--regid=" + strconv.Itoa(a.gid), "--init-groups",
			"--", name,
		}
		cmd = exec.CommandContext(ctx, "setpriv", append(setpriv, args...)...)
	}
	cmd.Env = append(env, extraEnv...)
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// run runs cmd and returns its stdout and stderr.
func run(cmd *exec.Cmd) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = nil
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// runKiln runs the kiln binary as u in /. For build, images and doctor it
// adds `--root STORE` with a store directory private to this test and user,
// unless args already name one.
func runKiln(t *testing.T, u User, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runKilnIn(t, u, "/", args...)
}

// runKilnIn is runKiln in working directory dir (relative paths in args,
// such as -f or --secret src=, resolve against it).
func runKilnIn(t *testing.T, u User, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runKilnEnv(t, u, dir, nil, args...)
}

// runKilnEnv is runKilnIn with extra environment variables.
func runKilnEnv(t *testing.T, u User, dir string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := needKiln(t)
	if len(args) > 0 && (args[0] == "build" || args[0] == "images" || args[0] == "doctor") && !hasFlag(args, "--root") {
		args = append([]string{args[0], "--root", storeDir(t, u)}, args[1:]...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	stdout, stderr, err = run(u.command(ctx, t, dir, env, bin, args...))
	t.Logf("kiln %s as %s: err=%v\n%s", strings.Join(args, " "), u, err, tail(stderr, 40))
	return stdout, stderr, err
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// storeDir is the kiln store of this test for u (created empty, owned by u).
func storeDir(t *testing.T, u User) string { return userDir(t, u, "store") }

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// userDir returns suite.workDir/<test>/<user>/<purpose>, created on first use,
// owned by u and removed when the test ends. The same arguments give the same
// directory within one test.
func userDir(t *testing.T, u User, purpose string) string {
	t.Helper()
	testDir := filepath.Join(suite.workDir, unsafeChars.ReplaceAllString(t.Name(), "_"))
	dir := filepath.Join(testDir, string(u), purpose)
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	if _, err := os.Stat(testDir); os.IsNotExist(err) {
		t.Cleanup(func() { os.RemoveAll(testDir) })
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating %s: %v", dir, err)
	}
	a := u.lookup(t)
	for d := dir; d != testDir; d = filepath.Dir(d) {
		if err := os.Chown(d, a.uid, a.gid); err != nil {
			t.Fatalf("chown %s to %s: %v", d, u, err)
		}
	}
	return dir
}

// contextFor copies the build context src to a directory u owns, keeping
// file modes, symlinks and hard links, and returns the copy. Within one test,
// later calls with the same src return the first copy. When the copy holds a
// gen.sh (for what git cannot store, such as hard links), it runs there as u.
func contextFor(t *testing.T, u User, src string) string {
	t.Helper()
	dst := filepath.Join(userDir(t, u, "contexts"), unsafeChars.ReplaceAllString(src, "_"))
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	a := u.lookup(t)
	links := map[uint64]string{} // inode of a multiply linked source file -> its copy
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if st, ok := linkedFile(d); ok {
			if first, seen := links[st]; seen {
				return os.Link(first, target)
			}
			links[st] = target
		}
		return copyEntry(p, target, d, a.uid, a.gid)
	})
	if err != nil {
		t.Fatalf("copying context %s for %s: %v", src, u, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "gen.sh")); err == nil {
		mustRunIn(t, u, dst, "sh", filepath.Join(dst, "gen.sh"))
	}
	return dst
}

// linkedFile returns the inode of a regular file with more than one link.
func linkedFile(d fs.DirEntry) (uint64, bool) {
	info, err := d.Info()
	if err != nil || !info.Mode().IsRegular() {
		return 0, false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Nlink < 2 {
		return 0, false
	}
	return st.Ino, true
}

func copyEntry(src, dst string, d fs.DirEntry, uid, gid int) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	switch {
	case d.IsDir():
		if err := os.Mkdir(dst, info.Mode().Perm()); err != nil {
			return err
		}
	case d.Type()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		return os.Lchown(dst, uid, gid)
	case d.Type().IsRegular():
		if err := copyFile(src, dst, info.Mode().Perm()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: unsupported file type %s in a test context", src, d.Type())
	}
	if err := os.Chown(dst, uid, gid); err != nil {
		return err
	}
	// Chmod after create: the umask must not change the modes a case relies on.
	return os.Chmod(dst, info.Mode().Perm())
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
