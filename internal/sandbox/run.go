package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Spec describes one process to run in a sandbox.
type Spec struct {
	Rootfs   string   // the merged writable rootfs, already mounted by the caller
	Args     []string // argv; Args[0] is resolved with the PATH from Env inside the rootfs
	Env      []string // environment; PATH and HOME get Docker's defaults when missing
	Dir      string   // working dir inside the rootfs, created if missing; default "/"
	User     string   // "", "name", "uid", "name:group" or "uid:gid", resolved inside the rootfs; default 0:0
	Hostname string   // default: the caller's hostname
	Network  string   // "host" (default: share the caller's network namespace) or "none"
	Mounts   []Mount  // extra mounts, made after the standard ones
	NoSync   bool     // make fsync, fdatasync, sync, syncfs, sync_file_range and msync(MS_SYNC) no-ops
	TempDir  string   // where the sandbox keeps its own files (the etc copies); "" = os.TempDir()
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
}

// Mount is an extra mount inside the sandbox.
type Mount struct {
	Source   string `json:"source"`   // host path for "bind"; ignored for "tmpfs"
	Target   string `json:"target"`   // absolute path inside the rootfs
	Type     string `json:"type"`     // "bind" or "tmpfs"
	ReadOnly bool   `json:"readOnly"` // mount read-only
}

// ExitError reports a sandboxed process that exited with a non-zero code or was
// killed by a signal.
type ExitError struct {
	Code   int    // exit code; 128+signal number when killed by a signal
	Signal string // signal name such as "SIGKILL" when killed by a signal, else ""
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return fmt.Sprintf("process killed by signal %s", e.Signal)
	}
	return fmt.Sprintf("process exited with code %d", e.Code)
}

// initConfig is what Run passes to the sandbox init over a pipe.
type initConfig struct {
	Rootfs, Dir, User, Hostname string
	Args, Env                   []string
	NetworkNone, NoSync         bool
	Mounts                      []Mount
	EtcFiles                    map[string]string // path inside rootfs → host file to bind there
}

// initResult is what the sandbox init reports back.
type initResult struct {
	Error  string `json:",omitempty"`
	Code   int
	Signal string `json:",omitempty"`
}

// Run runs spec in fresh mount, pid, ipc and uts namespaces (and a fresh network
// namespace with only lo up for Network "none"). The sandbox init is pid 1 of the
// new pid namespace, so leftover background processes are killed when the main
// process exits, and cancelling ctx kills the whole sandbox. Run returns
// *ExitError when the process exits non-zero or is killed. Mountpoints Run had
// to create in the rootfs are removed again afterwards if still empty.
func Run(ctx context.Context, spec Spec) (err error) {
	cfg, err := newInitConfig(spec)
	if err != nil {
		return err
	}
	root, err := os.OpenFile(cfg.Rootfs, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening rootfs: %w", err)
	}
	defer root.Close()
	tmp, err := os.MkdirTemp(spec.TempDir, "kiln-sandbox-")
	if err != nil {
		return fmt.Errorf("creating sandbox temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if cfg.EtcFiles, err = writeEtcFiles(tmp, cfg.Hostname); err != nil {
		return err
	}
	created, err := ensureMountpoints(root, mountpointsFor(cfg))
	defer func() {
		if rerr := removeCreated(root, created); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err != nil {
		return err
	}
	return startInit(ctx, spec, cfg)
}

func newInitConfig(spec Spec) (*initConfig, error) {
	if len(spec.Args) == 0 {
		return nil, errors.New("running sandbox: no command given")
	}
	if !filepath.IsAbs(spec.Rootfs) {
		return nil, fmt.Errorf("running sandbox: rootfs %q is not an absolute path", spec.Rootfs)
	}
	if spec.Network != "" && spec.Network != "host" && spec.Network != "none" {
		return nil, fmt.Errorf("running sandbox: network %q: want \"host\" or \"none\"", spec.Network)
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Target) || (m.Type != "bind" && m.Type != "tmpfs") {
			return nil, fmt.Errorf("running sandbox: mount %+v: want an absolute target and type \"bind\" or \"tmpfs\"", m)
		}
		if m.Type == "bind" && !filepath.IsAbs(m.Source) {
			return nil, fmt.Errorf("running sandbox: bind mount source %q is not an absolute path", m.Source)
		}
	}
	cfg := &initConfig{
		Rootfs: filepath.Clean(spec.Rootfs), Dir: spec.Dir, User: spec.User, Hostname: spec.Hostname,
		Args: spec.Args, Env: spec.Env, NetworkNone: spec.Network == "none", NoSync: spec.NoSync, Mounts: spec.Mounts,
	}
	if cfg.Dir == "" {
		cfg.Dir = "/"
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("running sandbox: reading hostname: %w", err)
		}
		cfg.Hostname = h
	}
	return cfg, nil
}

// writeEtcFiles writes the copies of resolv.conf, hosts and hostname that are
// bound into the sandbox, so that a RUN can neither change the host's files nor
// leave its own in the rootfs.
func writeEtcFiles(dir, hostname string) (map[string]string, error) {
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading host resolv.conf: %w", err)
	}
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading host hosts file: %w", err)
	}
	if len(hosts) == 0 {
		hosts = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	}
	if !bytes.HasSuffix(hosts, []byte("\n")) {
		hosts = append(hosts, '\n')
	}
	hosts = append(hosts, "127.0.1.1\t"+hostname+"\n"...)
	files := map[string]string{}
	for name, data := range map[string][]byte{
		"resolv.conf": resolv, "hosts": hosts, "hostname": []byte(hostname + "\n"),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, fmt.Errorf("writing sandbox %s: %w", name, err)
		}
		files["/etc/"+name] = p
	}
	return files, nil
}

// mountpointsFor lists the mountpoints the init needs in the rootfs.
func mountpointsFor(cfg *initConfig) []mountpoint {
	mps := []mountpoint{{"/proc", true}, {"/dev", true}, {"/sys", true}}
	for _, name := range []string{"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"} {
		mps = append(mps, mountpoint{name, false})
	}
	shadowed := []string{"/dev"} // the sandbox's own tmpfs; the init creates mountpoints there
	for _, m := range cfg.Mounts {
		if !beneathAny(m.Target, shadowed) {
			mps = append(mps, mountpoint{m.Target, mountsDir(m)})
		}
		if m.Type == "tmpfs" {
			shadowed = append(shadowed, m.Target)
		}
	}
	return mps
}

// mountsDir reports whether m mounts a directory (else a file).
func mountsDir(m Mount) bool {
	if m.Type == "bind" {
		if fi, err := os.Stat(m.Source); err == nil && !fi.IsDir() {
			return false
		}
	}
	return true
}

// beneathAny reports whether p lies strictly beneath one of dirs.
func beneathAny(p string, dirs []string) bool {
	p = filepath.Clean(p)
	for _, d := range dirs {
		if strings.HasPrefix(p, filepath.Clean(d)+"/") {
			return true
		}
	}
	return false
}

// startInit starts the sandbox init, hands it cfg and waits for its report.
func startInit(ctx context.Context, spec Spec, cfg *initConfig) error {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating sandbox config pipe: %w", err)
	}
	defer cfgR.Close()
	defer cfgW.Close()
	statR, statW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating sandbox status pipe: %w", err)
	}
	defer statR.Close()
	defer statW.Close()

	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args[0] = "kiln-sandbox-init"
	cmd.Env = append(os.Environ(), envRole+"="+roleInit)
	cmd.Stdout, cmd.Stderr = spec.Stdout, spec.Stderr
	stdin, err := feedStdin(spec.Stdin)
	if err != nil {
		return err
	}
	defer stdin.Close()
	cmd.Stdin = stdin.reader()
	cmd.ExtraFiles = []*os.File{cfgR, statW}
	flags := syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	if cfg.NetworkNone {
		flags |= syscall.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: uintptr(flags), Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting sandbox init for %q: %w%s", cfg.Args[0], err, userNamespaceRemedy(err))
	}
	cfgR.Close()
	statW.Close()
	stdin.started()
	encErr := json.NewEncoder(cfgW).Encode(cfg)
	cfgW.Close()
	report := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(statR)
		report <- b
	}()
	waitErr := cmd.Wait()
	b := <-report
	if ctx.Err() != nil {
		return fmt.Errorf("running %q: %w", cfg.Args[0], ctx.Err())
	}
	if encErr != nil {
		return fmt.Errorf("sending config to sandbox init: %w", encErr)
	}
	var res initResult
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("sandbox init for %q died without a report (%v)", cfg.Args[0], waitErr)
	}
	if res.Error != "" {
		return fmt.Errorf("setting up sandbox for %q: %s", cfg.Args[0], res.Error)
	}
	if res.Code != 0 || res.Signal != "" {
		return &ExitError{Code: res.Code, Signal: res.Signal}
	}
	return nil
}

// stdinFeed hands a Stdin that is not a file to the sandbox through a pipe.
// Unlike os/exec, Run does not wait for such a Stdin to reach EOF: once the
// sandbox is gone the pipe is closed, and the copying goroutine ends at its
// next Read.
type stdinFeed struct {
	r, w *os.File // r is nil when there is no Stdin
	file *os.File // Stdin itself when it is a file
}

func feedStdin(in io.Reader) (*stdinFeed, error) {
	if in == nil {
		return &stdinFeed{}, nil
	}
	if f, ok := in.(*os.File); ok {
		return &stdinFeed{file: f}, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating sandbox stdin pipe: %w", err)
	}
	go func() {
		io.Copy(w, in)
		w.Close()
	}()
	return &stdinFeed{r: r, w: w}, nil
}

// reader returns what the init's stdin should be.
func (f *stdinFeed) reader() io.Reader {
	switch {
	case f.file != nil:
		return f.file
	case f.r != nil:
		return f.r
	}
	return nil
}

// started closes the parent's copy of the read end once the init has its own.
func (f *stdinFeed) started() {
	if f.r != nil {
		f.r.Close()
	}
}

// Close stops feeding: the copying goroutine's next write fails.
func (f *stdinFeed) Close() {
	if f.w != nil {
		f.w.Close()
	}
}
