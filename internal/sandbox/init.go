package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Internal roles of a re-executed kiln, dispatched by MaybeRunChild.
const (
	roleInit  = "init"  // pid 1 of a RUN sandbox
	roleProbe = "probe" // Detect's throwaway user namespace
)

// defaultPath is the PATH Docker gives a process whose environment has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MaybeRunChild must be the first call in main(). When this process was started
// as one of sandbox's internal children (the RUN init, or Detect's probe), it
// runs that role and exits; otherwise it returns at once.
func MaybeRunChild() {
	role, ok := os.LookupEnv(envRole)
	if !ok {
		return
	}
	os.Unsetenv(envRole)
	switch role {
	case roleInit:
		runInit()
	case roleProbe:
		runProbe()
	}
	fmt.Fprintf(os.Stderr, "kiln: unknown sandbox role %q\n", role)
	os.Exit(125)
}

// runInit is pid 1 of a RUN sandbox: it reads its config from fd 3, builds the
// rootfs, starts the process, reaps every child until the process exits, and
// writes an initResult to fd 4. When it exits the kernel kills whatever else
// is left in the pid namespace.
func runInit() {
	runtime.LockOSThread() // no_new_privs and seccomp apply to this thread, which forks the process
	cfgFile, status := os.NewFile(3, "config"), os.NewFile(4, "status")
	unix.CloseOnExec(3)
	unix.CloseOnExec(4)
	res := initialize(cfgFile)
	json.NewEncoder(status).Encode(res)
	os.Exit(0)
}

func initialize(cfgFile *os.File) initResult {
	var cfg initConfig
	err := json.NewDecoder(cfgFile).Decode(&cfg)
	cfgFile.Close()
	if err != nil {
		return initResult{Error: "reading sandbox config: " + err.Error()}
	}
	cmd, err := prepare(&cfg)
	if err != nil {
		return initResult{Error: err.Error()}
	}
	if err := cmd.Start(); err != nil {
		return initResult{Error: fmt.Sprintf("starting %s: %v", cmd.Path, err)}
	}
	return reap(cmd.Process.Pid)
}

// prepare sets up the namespaces' contents and returns the command to start.
func prepare(cfg *initConfig) (*exec.Cmd, error) {
	if err := setupRootfs(cfg); err != nil {
		return nil, err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return nil, fmt.Errorf("setting hostname %q: %w", cfg.Hostname, err)
	}
	if cfg.NetworkNone {
		if err := loopbackUp(); err != nil {
			return nil, err
		}
	}
	u, err := lookupUser(cfg.User)
	if err != nil {
		return nil, err
	}
	if err := checkMapped(u); err != nil {
		return nil, err
	}
	env := withDefaults(cfg.Env, u.Home)
	dir := path.Clean("/" + cfg.Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating working directory: %w", err)
	}
	argv0, err := lookPath(cfg.Args[0], env)
	if err != nil {
		return nil, err
	}
	if err := limitBoundingSet(runCapabilities()); err != nil {
		return nil, err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("setting no_new_privs: %w", err)
	}
	if cfg.NoSync {
		if err := installNoSyncFilter(); err != nil {
			return nil, err
		}
	}
	cmd := &exec.Cmd{Path: argv0, Args: cfg.Args, Env: env, Dir: dir,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	cred := &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}
	for _, g := range u.Groups {
		cred.Groups = append(cred.Groups, uint32(g))
	}
	if b, err := os.ReadFile("/proc/self/setgroups"); err == nil && strings.TrimSpace(string(b)) == "deny" {
		cred.NoSetGroups = true // single id mapping: the kernel forbids setgroups
	}
	// A session of its own: the RUN never gets the caller's terminal or its signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
	return cmd, nil
}

// reap waits for every child of pid 1 until pid itself exits.
func reap(pid int) initResult {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return initResult{Error: fmt.Sprintf("waiting for process %d: %v", pid, err)}
		}
		if got != pid {
			continue
		}
		if ws.Signaled() {
			return initResult{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
		}
		return initResult{Code: ws.ExitStatus()}
	}
}

// withDefaults adds Docker's default PATH and the user's HOME when env lacks them.
func withDefaults(env []string, home string) []string {
	out := append([]string(nil), env...)
	if lookupEnv(env, "PATH") == "" {
		out = append(out, "PATH="+defaultPath)
	}
	if lookupEnv(env, "HOME") == "" {
		out = append(out, "HOME="+home)
	}
	return out
}

func lookupEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// lookPath resolves file like execvp with the PATH from env, in the current root.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range strings.Split(lookupEnv(env, "PATH"), ":") {
		if dir == "" {
			dir = "."
		}
		p := path.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: executable file not found in $PATH (%s)", file, lookupEnv(env, "PATH"))
}

// loopbackUp brings up lo in a fresh network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	return nil
}

// checkMapped fails clearly when u's ids are not mapped in the user namespace
// (as with a single id mapping), where the kernel would only say EINVAL.
func checkMapped(u execUser) error {
	for _, c := range []struct {
		file string
		ids  []int
	}{{"/proc/self/uid_map", []int{u.UID}}, {"/proc/self/gid_map", u.Groups}} {
		ranges, err := readIDMap(c.file)
		if err != nil {
			return fmt.Errorf("checking user %d:%d: %w", u.UID, u.GID, err)
		}
		for _, id := range c.ids {
			if !inRanges(ranges, id) {
				return fmt.Errorf("user %d:%d (groups %v): id %d is not mapped in kiln's user namespace (%s); "+
					"give the user running kiln /etc/subuid and /etc/subgid ranges (run `kiln doctor`)", u.UID, u.GID, u.Groups, id, c.file)
			}
		}
	}
	return nil
}

func inRanges(ranges []IDRange, id int) bool {
	for _, r := range ranges {
		if id >= r.ContainerID && id-r.ContainerID < r.Size {
			return true
		}
	}
	return false
}
