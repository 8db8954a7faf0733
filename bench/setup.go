package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// machineEnv is what set-up prepared for the runs.
type machineEnv struct {
	acct account
	// kilnBin is a private copy of the kiln binary (the repository's
	// bin/kiln may be rebuilt while a long benchmark runs).
	kilnBin string
	// runsDir holds one directory per run, removed after it is measured.
	runsDir string
	// logsDir holds every build's output.
	logsDir string
	// runtimeDir is the builders' XDG_RUNTIME_DIR, owned by the user.
	runtimeDir string
}

// aptCacherAddr is where apt-cacher-ng listens.
const aptCacherAddr = "127.0.0.1:3142"

// setUp makes the machine ready, idempotently: peer tools, test registry and
// fixture images (test/setup.sh), the benchmark user, apt-cacher-ng, pigz and
// zstd, the kiln binary, and the work directory.
func setUp(ctx context.Context, cfg config) (machineEnv, error) {
	if os.Geteuid() != 0 {
		return machineEnv{}, fmt.Errorf("setting up: must run as root (it installs packages and runs the builders as %s through setpriv); try: sudo go run ./bench", cfg.user)
	}
	needDebian, needApt := false, false
	for _, name := range cfg.workloads {
		w, _ := workloadByName(name)
		needDebian = needDebian || w.base == debianBase
		needApt = needApt || w.apt
	}
	script := filepath.Join(cfg.repoRoot, "test", "setup.sh")
	setupEnv := os.Environ()
	if needDebian {
		setupEnv = append(setupEnv, "KILN_TEST_DEBIAN=1")
	}
	log.Printf("setup: %s", script)
	if err := runLogged(ctx, os.Stderr, setupEnv, script); err != nil {
		return machineEnv{}, fmt.Errorf("setting up with %s: %w", script, err)
	}
	acct, err := ensureAccount(ctx, cfg.user)
	if err != nil {
		return machineEnv{}, err
	}
	if err := ensurePackages(ctx, "apt-cacher-ng", "pigz", "zstd"); err != nil {
		return machineEnv{}, err
	}
	if needApt {
		if err := ensureAptCacher(ctx); err != nil {
			return machineEnv{}, err
		}
	}
	env := machineEnv{
		acct:       acct,
		kilnBin:    filepath.Join(cfg.workDir, "bin", "kiln"),
		runsDir:    filepath.Join(cfg.workDir, "runs"),
		logsDir:    filepath.Join(cfg.workDir, "logs"),
		runtimeDir: filepath.Join(cfg.workDir, "xdg-runtime"),
	}
	if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return env, fmt.Errorf("creating the work directory: %w", err)
	}
	// Left-overs of an earlier, interrupted benchmark.
	if err := clearFreshFSs(env.runsDir); err != nil {
		return env, err
	}
	for _, dir := range []string{env.runsDir, env.logsDir} {
		if err := os.RemoveAll(dir); err != nil {
			return env, fmt.Errorf("clearing %s: %w", dir, err)
		}
	}
	if err := acct.mkdirOwned(env.runsDir, 0o755); err != nil {
		return env, err
	}
	if err := os.MkdirAll(env.logsDir, 0o755); err != nil {
		return env, fmt.Errorf("creating %s: %w", env.logsDir, err)
	}
	if err := acct.mkdirOwned(env.runtimeDir, 0o700); err != nil {
		return env, err
	}
	if err := installKiln(ctx, cfg, env.kilnBin); err != nil {
		return env, err
	}
	return env, nil
}

// runLogged runs argv with env, sending its output to w.
func runLogged(ctx context.Context, w io.Writer, env []string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = w, w
	return cmd.Run()
}

// ensurePackages installs the Debian packages that are missing.
func ensurePackages(ctx context.Context, pkgs ...string) error {
	var missing []string
	for _, p := range pkgs {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	log.Printf("setup: apt-get install %s", strings.Join(missing, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := runLogged(ctx, os.Stderr, env, "apt-get", "update", "-q"); err != nil {
		return fmt.Errorf("apt-get update (to install %s): %w", strings.Join(missing, " "), err)
	}
	if err := runLogged(ctx, os.Stderr, env, append([]string{"apt-get", "install", "-y", "-q"}, missing...)...); err != nil {
		return fmt.Errorf("installing %s: %w", strings.Join(missing, " "), err)
	}
	return nil
}

// listening reports whether something accepts TCP connections on addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// aptCacherConf points apt-cacher-ng's Debian backend at deb.debian.org: its
// default, ftp.debian.org, may not be reachable where deb.debian.org is.
const (
	aptCacherConfPath = "/etc/apt-cacher-ng/zzz_kiln_bench.conf"
	aptCacherConf     = `# Written by kiln's benchmark harness (bench/setup.go): fetch Debian packages
# from deb.debian.org, the mirror the machine is known to reach.
Remap-debrep: file:deb_mirror*.gz /debian ; http://deb.debian.org/debian/
`
)

// ensureAptCacher configures apt-cacher-ng and (re)starts it unless it
// already listens with that configuration. Without systemd (as in these
// containers) its init script starts it.
func ensureAptCacher(ctx context.Context) error {
	old, _ := os.ReadFile(aptCacherConfPath)
	changed := string(old) != aptCacherConf
	if changed {
		if err := os.WriteFile(aptCacherConfPath, []byte(aptCacherConf), 0o644); err != nil {
			return fmt.Errorf("configuring apt-cacher-ng: %w", err)
		}
	}
	if listening(aptCacherAddr) && !changed {
		return nil
	}
	action := "start"
	if listening(aptCacherAddr) {
		action = "restart"
	}
	argv := []string{"/etc/init.d/apt-cacher-ng", action}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		argv = []string{"systemctl", action, "apt-cacher-ng"}
	}
	log.Printf("setup: %s", strings.Join(argv, " "))
	if err := runLogged(ctx, os.Stderr, os.Environ(), argv...); err != nil {
		return fmt.Errorf("starting apt-cacher-ng with %s: %w", strings.Join(argv, " "), err)
	}
	for i := 0; i < 100; i++ {
		if listening(aptCacherAddr) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("starting apt-cacher-ng: nothing listens on %s after 10s (see /var/log/apt-cacher-ng/)", aptCacherAddr)
}

// installKiln copies the kiln binary to dst, where the benchmark user can run it. The
// repository's bin/kiln is built first with `make build`, so that it is the commit the results
// name (an old bin/kiln once ran a whole benchmark); another -kiln binary is taken as it is.
func installKiln(ctx context.Context, cfg config, dst string) error {
	_, err := os.Stat(cfg.kilnBin)
	if own := filepath.Join(cfg.repoRoot, "bin", "kiln"); cfg.kilnBin == own || os.IsNotExist(err) {
		log.Printf("setup: make build (for %s)", cfg.kilnBin)
		if err := runLogged(ctx, os.Stderr, os.Environ(), "make", "-C", cfg.repoRoot, "build"); err != nil {
			return fmt.Errorf("building kiln with make build: %w", err)
		}
	}
	data, err := os.ReadFile(cfg.kilnBin)
	if err != nil {
		return fmt.Errorf("reading the kiln binary: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("installing kiln: %w", err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return fmt.Errorf("installing kiln to %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("installing kiln to %s: %w", dst, err)
	}
	return nil
}
