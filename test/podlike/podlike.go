// Package podlike runs programs inside a container shaped like a Kubernetes
// pod with `hostUsers: false`, so tests can prove kiln works where it will be
// deployed. The container is a runc bundle with:
//
//   - a user namespace mapping 65536 ids (container 0 = host DefaultHostIDBase);
//   - containerd's default capability set, masked and read-only /proc paths;
//   - a read-only /sys, fresh pid, ipc, uts and mount namespaces;
//   - the host network (no network namespace), as a hostNetwork pod has;
//   - an emptyDir-like store directory bind-mounted read-write at /store;
//   - no seccomp filter: Kubernetes' default is Unconfined, and containerd's
//     RuntimeDefault profile forbids the unshare kiln needs (see TESTING.md).
//
// The root file system is an image (by default the Debian fixture if it was
// built, else busybox), extracted with its owners shifted into the mapped
// range, plus any binaries the caller adds (kiln itself).
//
// A Pod needs root on the host and runc.
package podlike

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

const (
	// DefaultHostIDBase is the first host id of the pod's user namespace. It is
	// far above the ranges useradd hands out in /etc/subuid (from 100000).
	DefaultHostIDBase = 1_000_000
	// IDCount is the size of the pod's id mapping, as kubelet gives a pod.
	IDCount = 65536
	// StorePath is where the store directory appears inside the pod.
	StorePath = "/store"
	// FixtureDir holds the fixture image layouts test/setup.sh builds.
	FixtureDir = "/var/cache/kiln-test/fixtures"
)

// Pod is a prepared runc bundle. Runs are serialized: each one rewrites the
// bundle's process and starts a new container from it.
type Pod struct {
	dir      string // bundle directory: config.json, rootfs/, store/, state/
	hostBase int
	unmasked bool
	binaries map[string]string // container path -> host path
	image    string            // OCI layout of the root file system

	mu  sync.Mutex
	seq int
}

// Option configures New.
type Option func(*Pod)

// WithImage uses the single image of OCI layout dir as the root file system.
func WithImage(layoutDir string) Option { return func(p *Pod) { p.image = layoutDir } }

// WithBinary copies the host file hostPath into the root file system at
// containerPath, mode 0755, owned by the pod's root.
func WithBinary(hostPath, containerPath string) Option {
	return func(p *Pod) { p.binaries[containerPath] = hostPath }
}

// WithHostIDBase maps the pod's ids to host ids from base instead of DefaultHostIDBase.
func WithHostIDBase(base int) Option { return func(p *Pod) { p.hostBase = base } }

// WithUnmaskedProc mounts /proc without masked or read-only paths, like a pod
// with `procMount: Unmasked`.
func WithUnmaskedProc() Option { return func(p *Pod) { p.unmasked = true } }

// DefaultImage returns the Debian fixture layout when it exists, else busybox's.
func DefaultImage() string {
	if _, err := os.Stat(filepath.Join(FixtureDir, "debian", "index.json")); err == nil {
		return filepath.Join(FixtureDir, "debian")
	}
	return filepath.Join(FixtureDir, "busybox")
}

// New prepares a pod bundle in dir (which must not exist or be empty). The
// pod's root is an unprivileged host id, so every directory above dir must be
// searchable by others (o+x); t.TempDir() is not until chmod'ed.
func New(ctx context.Context, dir string, opts ...Option) (*Pod, error) {
	p := &Pod{dir: dir, hostBase: DefaultHostIDBase, binaries: map[string]string{}, image: DefaultImage()}
	for _, o := range opts {
		o(p)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("preparing pod bundle: needs root (runc with a user namespace mapping)")
	}
	if err := os.MkdirAll(p.StoreDir(), 0o755); err != nil {
		return nil, fmt.Errorf("preparing pod bundle %s: %w", dir, err)
	}
	if err := searchable(dir); err != nil {
		return nil, fmt.Errorf("preparing pod bundle %s: %w", dir, err)
	}
	// Only the pod's root may enter its bundle; the store is the pod's own.
	if err := os.Chown(p.StoreDir(), p.hostBase, p.hostBase); err != nil {
		return nil, fmt.Errorf("chown pod store %s: %w", p.StoreDir(), err)
	}
	if err := extractImage(ctx, p.image, p.rootfs(), p.hostBase); err != nil {
		return nil, fmt.Errorf("preparing pod rootfs from %s: %w", p.image, err)
	}
	for cpath, hpath := range p.binaries {
		if err := installFile(hpath, filepath.Join(p.rootfs(), cpath), p.hostBase); err != nil {
			return nil, fmt.Errorf("installing %s into pod at %s: %w", hpath, cpath, err)
		}
	}
	return p, nil
}

// searchable checks that dir and its ancestors let others search them.
func searchable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %v) is not searchable by the pod's unprivileged root; chmod o+x it", d, fi.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

func (p *Pod) rootfs() string { return filepath.Join(p.dir, "rootfs") }

// StoreDir is the host directory mounted at StorePath in the pod, owned by the
// pod's root (host id HostIDBase).
func (p *Pod) StoreDir() string { return filepath.Join(p.dir, "store") }

// HostID maps a pod id to the host id that stands for it.
func (p *Pod) HostID(id int) int { return p.hostBase + id }

// Run runs args in a fresh container of the pod as uid (and gid = uid),
// waits for it, and returns its stdout and stderr.
func (p *Pod) Run(ctx context.Context, uid int, args ...string) (stdout, stderr string, err error) {
	return p.RunContainer(ctx, Container{UID: uid, Args: args})
}

// RunContainer runs c in a fresh container of the pod, waits for it, and returns its stdout
// and stderr.
func (p *Pod) RunContainer(ctx context.Context, c Container) (stdout, stderr string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	uid, args := c.UID, c.Args
	if uid < 0 || uid >= IDCount {
		return "", "", fmt.Errorf("running %q in pod: uid %d outside the pod's %d ids", args, uid, IDCount)
	}
	cfg := p.containerSpec(c)
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("encoding pod config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "config.json"), raw, 0o644); err != nil {
		return "", "", fmt.Errorf("writing pod config: %w", err)
	}
	p.seq++
	id := fmt.Sprintf("kiln-pod-%d-%d", os.Getpid(), p.seq)
	state := filepath.Join(p.dir, "state")
	cmd := exec.CommandContext(ctx, "runc", "--root", state, "run", "--bundle", p.dir, id)
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	// runc removes a container it ran in the foreground; make sure of it.
	_ = exec.Command("runc", "--root", state, "delete", "--force", id).Run()
	if err != nil {
		return out.String(), errb.String(), fmt.Errorf("running %q in pod as uid %s: %w", args, strconv.Itoa(uid), err)
	}
	return out.String(), errb.String(), nil
}
