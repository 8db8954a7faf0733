package podlike

import (
	"encoding/json"
	"path/filepath"
)

// The runtime-spec subset this package writes. Field names follow
// github.com/opencontainers/runtime-spec/specs-go.

type spec struct {
	OCIVersion string  `json:"ociVersion"`
	Process    process `json:"process"`
	Root       root    `json:"root"`
	Hostname   string  `json:"hostname"`
	Mounts     []mount `json:"mounts"`
	Linux      linux   `json:"linux"`
}

type process struct {
	Terminal        bool         `json:"terminal"`
	User            user         `json:"user"`
	Args            []string     `json:"args"`
	Env             []string     `json:"env"`
	Cwd             string       `json:"cwd"`
	Capabilities    capabilities `json:"capabilities"`
	Rlimits         []rlimit     `json:"rlimits"`
	NoNewPrivileges bool         `json:"noNewPrivileges"`
}

type user struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type capabilities struct {
	Bounding  []string `json:"bounding"`
	Effective []string `json:"effective"`
	Permitted []string `json:"permitted"`
}

type rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type root struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
}

type idMapping struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

type namespace struct {
	Type string `json:"type"`
}

type linux struct {
	Seccomp       json.RawMessage `json:"seccomp,omitempty"`
	UIDMappings   []idMapping     `json:"uidMappings"`
	GIDMappings   []idMapping     `json:"gidMappings"`
	Namespaces    []namespace     `json:"namespaces"`
	MaskedPaths   []string        `json:"maskedPaths,omitempty"`
	ReadonlyPaths []string        `json:"readonlyPaths,omitempty"`
}

// DefaultCapabilities is containerd's default capability set for a container
// (what a pod gets without securityContext.capabilities).
func DefaultCapabilities() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
		"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// maskedPaths and readonlyPaths are containerd's defaults (oci/spec.go).
func maskedPaths() []string {
	return []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
}

func readonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// Container is one container run in the pod, as a Kubernetes container spec would set it.
type Container struct {
	UID  int
	Args []string
	// Env replaces the default environment (PATH and HOME) when not nil.
	Env []string
	// Capabilities replaces DefaultCapabilities when not nil ("CAP_SETUID", ...).
	Capabilities []string
	// NoNewPrivileges is allowPrivilegeEscalation: false.
	NoNewPrivileges bool
	// Binds are volumes: host paths mounted into the container.
	Binds []Bind
	// Seccomp is an OCI seccomp profile (the JSON of a Localhost profile); nil runs unconfined.
	Seccomp json.RawMessage
}

// Bind mounts a host path (a directory or a file) into a container.
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

// containerSpec is the container config for c.
func (p *Pod) containerSpec(c Container) spec {
	caps := DefaultCapabilities()
	if c.Capabilities != nil {
		caps = c.Capabilities
	}
	env := c.Env
	if env == nil {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + StorePath}
	}
	s := spec{
		OCIVersion: "1.0.2",
		Process: process{
			User:            user{UID: uint32(c.UID), GID: uint32(c.UID)},
			Args:            c.Args,
			Env:             env,
			NoNewPrivileges: c.NoNewPrivileges,
			Cwd:             "/",
			Capabilities:    capabilities{Bounding: caps, Effective: caps, Permitted: caps},
			// This machine's hard limits are below runtimes' usual defaults.
			Rlimits: []rlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
		},
		Root:     root{Path: "rootfs"},
		Hostname: "kiln-pod",
		Mounts: []mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			// A fresh sysfs needs a network namespace owned by the pod's user
			// namespace; with the host network the kernel refuses it (EPERM),
			// so /sys is the host's, bound read-only, as rootless podman does.
			{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind", "ro"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/etc/hosts", Options: []string{"rbind", "ro"}},
			{Destination: StorePath, Type: "bind", Source: filepath.Join(p.dir, "store"), Options: []string{"rbind", "rw"}},
		},
		Linux: linux{
			UIDMappings: []idMapping{{ContainerID: 0, HostID: uint32(p.hostBase), Size: IDCount}},
			GIDMappings: []idMapping{{ContainerID: 0, HostID: uint32(p.hostBase), Size: IDCount}},
			// No network namespace: the pod uses the host network.
			Namespaces: []namespace{{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}, {Type: "user"}},
		},
	}
	s.Linux.Seccomp = c.Seccomp
	for _, b := range c.Binds {
		opts := []string{"rbind", "rw"}
		if b.ReadOnly {
			opts[1] = "ro"
		}
		s.Mounts = append(s.Mounts, mount{Destination: b.Container, Type: "bind", Source: b.Host, Options: opts})
	}
	if !p.unmasked {
		s.Linux.MaskedPaths = maskedPaths()
		s.Linux.ReadonlyPaths = readonlyPaths()
	}
	return s
}
