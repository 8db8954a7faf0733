package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

// Environment variables through which a parent passes state to its re-executed child.
const (
	envMode   = "KILN_SANDBOX_MODE"    // JSON Mapping; set in kiln's user-namespace child
	envSyncFD = "KILN_SANDBOX_SYNC_FD" // fd the child blocks on until newuidmap/newgidmap ran
	envRole   = "KILN_SANDBOX_ROLE"    // internal role run by MaybeRunChild
)

// ReexecInUserNamespace moves kiln into a user namespace. If the current process is
// not already kiln's user-namespace child, it re-executes /proc/self/exe with the
// same arguments inside a new user + mount namespace with the best id mapping
// available (full, subuid, single: see Mapping), forwards SIGINT, SIGTERM, SIGHUP
// and SIGQUIT to it, waits, and exits with its status: it never returns in the
// parent, except with an error when the child could not be started. In the
// child it returns the Mapping in effect.
func ReexecInUserNamespace() (Mapping, error) {
	if v, ok := os.LookupEnv(envMode); ok {
		return enterChild(v)
	}
	p, err := choosePlan()
	if err != nil {
		return Mapping{}, err
	}
	if p.Mapping.Mode == ModeSingle {
		fmt.Fprintf(os.Stderr, "kiln: warning: %s; RUN steps and layers that chown files to any other uid or gid will fail. To fix it, %s\n",
			p.Why, singleRemedy())
	}
	code, err := runInUserNamespace(p.Mapping)
	if err != nil {
		return Mapping{}, err
	}
	os.Exit(code)
	panic("unreachable")
}

// enterChild runs in the re-executed child: it waits for the parent to write
// the id maps when they are written by newuidmap, then checks it is root.
func enterChild(encoded string) (Mapping, error) {
	var m Mapping
	if err := json.Unmarshal([]byte(encoded), &m); err != nil {
		return Mapping{}, fmt.Errorf("decoding %s from the parent: %w", envMode, err)
	}
	if v, ok := os.LookupEnv(envSyncFD); ok {
		os.Unsetenv(envSyncFD)
		fd, err := strconv.Atoi(v)
		if err != nil {
			return Mapping{}, fmt.Errorf("decoding %s=%q: %w", envSyncFD, v, err)
		}
		sync := os.NewFile(uintptr(fd), "sync")
		var b [1]byte
		_, err = io.ReadFull(sync, b[:])
		sync.Close()
		if err != nil {
			return Mapping{}, fmt.Errorf("waiting for the parent to write the id maps: parent gave up (%v)", err)
		}
		// This process was exec'd before it had a uid in the namespace, so
		// execve dropped its capabilities; exec again, now as uid 0, to get them.
		if err := syscall.Exec("/proc/self/exe", os.Args, os.Environ()); err != nil {
			return Mapping{}, fmt.Errorf("re-executing /proc/self/exe as uid 0 of the user namespace: %w", err)
		}
	}
	if os.Geteuid() != 0 {
		return Mapping{}, fmt.Errorf("entering user namespace: running as uid %d instead of 0; the id maps were not written (check /proc/self/uid_map)", os.Geteuid())
	}
	return m, nil
}

// runInUserNamespace starts the child in a new user + mount namespace with m,
// waits for it and returns its exit status.
func runInUserNamespace(m Mapping) (int, error) {
	enc, err := json.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("encoding id mapping: %w", err)
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMode+"="+string(enc))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	var release *os.File
	if m.Mode == ModeSubuid {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, fmt.Errorf("creating sync pipe for the user namespace child: %w", err)
		}
		defer r.Close()
		release = w
		defer release.Close()
		cmd.ExtraFiles = []*os.File{r}
		cmd.Env = append(cmd.Env, envSyncFD+"=3")
	} else {
		cmd.SysProcAttr.UidMappings = sysMappings(m.UIDs)
		cmd.SysProcAttr.GidMappings = sysMappings(m.GIDs)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = m.Mode == ModeFull
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(signals)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("creating user namespace (%s mapping): %w%s", m.Mode, err, userNamespaceRemedy(err))
	}
	if release != nil {
		if err := writeMapsWithShadowUtils(cmd.Process.Pid, m); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return 0, err
		}
		release.Write([]byte{1})
		release.Close()
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-signals:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	if err != nil && cmd.ProcessState == nil {
		return 0, fmt.Errorf("waiting for the user namespace child: %w", err)
	}
	return exitStatus(cmd.ProcessState), nil
}

// writeMapsWithShadowUtils writes the child's id maps with the setuid helpers
// newuidmap and newgidmap, the only way an unprivileged user may map
// subordinate ids.
func writeMapsWithShadowUtils(pid int, m Mapping) error {
	for _, t := range []struct {
		tool   string
		ranges []IDRange
	}{{"newuidmap", m.UIDs}, {"newgidmap", m.GIDs}} {
		args := []string{strconv.Itoa(pid)}
		for _, r := range t.ranges {
			args = append(args, strconv.Itoa(r.ContainerID), strconv.Itoa(r.HostID), strconv.Itoa(r.Size))
		}
		out, err := exec.Command(t.tool, args...).CombinedOutput()
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("writing id maps: %s not found: install the uidmap package (apt-get install uidmap)", t.tool)
		}
		if err != nil {
			return fmt.Errorf("writing id maps with %s %v: %v: %s (check /etc/subuid and /etc/subgid and that %s is setuid root or has cap_setuid/cap_setgid)",
				t.tool, args, err, out, t.tool)
		}
	}
	return nil
}

func sysMappings(ranges []IDRange) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(ranges))
	for _, r := range ranges {
		out = append(out, syscall.SysProcIDMap{ContainerID: r.ContainerID, HostID: r.HostID, Size: r.Size})
	}
	return out
}

// exitStatus turns a process state into a shell-style exit status.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
