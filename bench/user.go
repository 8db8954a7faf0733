package main

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// account is the unprivileged user the builders run as.
type account struct {
	name     string
	uid, gid int
	home     string
}

// lookupAccount reads name's passwd entry.
func lookupAccount(name string) (account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return account{}, fmt.Errorf("looking up user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return account{}, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return account{}, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return account{name: name, uid: uid, gid: gid, home: u.HomeDir}, nil
}

// ensureAccount returns the account called name, creating it first (as
// test/setup.sh creates kiln-sub: a system user with a home directory and
// 65536 subordinate uids and gids) when it does not exist.
func ensureAccount(ctx context.Context, name string) (account, error) {
	if _, err := user.Lookup(name); err != nil {
		log.Printf("user %s missing: creating it", name)
		cmd := exec.CommandContext(ctx, "useradd", "--system", "--create-home", "--home-dir", "/home/"+name, "--shell", "/bin/bash", name)
		if out, err := cmd.CombinedOutput(); err != nil {
			return account{}, fmt.Errorf("creating user %s: %v: %s", name, err, out)
		}
	}
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		if err := ensureSubIDs(file, name); err != nil {
			return account{}, err
		}
	}
	return lookupAccount(name)
}

// ensureSubIDs gives name a range of 65536 ids in file (/etc/subuid or
// /etc/subgid) unless it has one.
func ensureSubIDs(file, name string) error {
	data, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, name+":") {
			return nil
		}
	}
	start := nextFreeSubID(string(data))
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("adding %s to %s: %w", name, file, err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s:%d:65536\n", name, start); err != nil {
		return fmt.Errorf("adding %s to %s: %w", name, file, err)
	}
	return f.Close()
}

// nextFreeSubID is the first id at or above 100000 past every range in a
// subuid/subgid file's content.
func nextFreeSubID(content string) int64 {
	next := int64(100000)
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseInt(f[1], 10, 64)
		count, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 == nil && err2 == nil && start+count > next {
			next = start + count
		}
	}
	return next
}

// env is the clean environment of a builder run as a: HOME, USER, PATH,
// XDG_RUNTIME_DIR (which rootless buildah needs), TMPDIR, plus extra.
func (a account) env(runtimeDir, tmpDir string, extra ...string) []string {
	return append([]string{
		"HOME=" + a.home,
		"USER=" + a.name,
		"LOGNAME=" + a.name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"XDG_RUNTIME_DIR=" + runtimeDir,
		"TMPDIR=" + tmpDir,
	}, extra...)
}

// command runs argv as a through setpriv (the same uid, gid and groups a
// login would give), in dir, with exactly env.
func (a account) command(ctx context.Context, dir string, env []string, argv ...string) *exec.Cmd {
	args := append([]string{
		"--reuid=" + strconv.Itoa(a.uid), "--regid=" + strconv.Itoa(a.gid), "--init-groups", "--",
	}, argv...)
	cmd := exec.CommandContext(ctx, "setpriv", args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.WaitDelay = 30 * time.Second
	return cmd
}

// mkdirOwned creates dir (and parents) and gives dir itself to a.
func (a account) mkdirOwned(dir string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.Chown(dir, a.uid, a.gid); err != nil {
		return fmt.Errorf("giving %s to %s: %w", dir, a.name, err)
	}
	return nil
}

// copyTreeOwned copies the regular files and directories of src to dst,
// owned by a (a build context the builders can read and the harness can
// change between builds).
func (a account) copyTreeOwned(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copying %s: %w", path, err)
		}
		switch {
		case d.IsDir():
			return a.mkdirOwned(target, 0o755)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("copying %s: %w", path, err)
			}
			if err := os.WriteFile(target, data, info.Mode().Perm()); err != nil {
				return fmt.Errorf("copying %s: %w", path, err)
			}
			if err := os.Chown(target, a.uid, a.gid); err != nil {
				return fmt.Errorf("giving %s to %s: %w", target, a.name, err)
			}
			return nil
		default:
			return fmt.Errorf("copying %s: only regular files and directories are expected in a workload", path)
		}
	})
}
