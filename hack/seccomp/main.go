// Command seccomp writes kiln-seccomp.json, the seccomp profile kiln's build pods run under
// (config/seccomp/kiln-seccomp.json, installed into each node's kubelet seccomp directory):
// containerd's default profile for a container with the build pod's capabilities, plus
// exactly the calls kiln needs to build rootless inside the pod. Those calls are, in
// containerd's default, allowed only to containers with CAP_SYS_ADMIN, which a build pod
// never has; inside kiln's own user namespaces they act on namespaces the pod owns:
//
//   - clone, clone3 and unshare with namespace flags: kiln's user, mount, pid, ipc and uts
//     namespaces (and net for RUN --network=none);
//   - mount, umount2, pivot_root and the new mount API (fsopen, fsconfig, fsmount,
//     move_mount, open_tree, mount_setattr): overlay snapshots, /proc, /dev, bind mounts;
//   - sethostname: the RUN container's hostname;
//   - setns: joining a stage's namespaces.
//
// Each call is used by kiln on some path; some are alternatives (the new mount API or
// mount(2)), and kiln falls back to slower paths (copy snapshots) when a call is refused, so
// only clone with namespace flags is strictly needed for a simple build (measured by removing
// them one at a time under TestBuildPodInPodLikeContainer). The profile lists the
// architectures of the machine that generates it: regenerate it on arm64 for arm64 nodes.
//
// Run it with `make seccomp`; the versions are pinned in hack/seccomp/go.mod.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// kilnCalls are the system calls kiln adds to containerd's default profile.
var kilnCalls = []string{
	"clone", "clone3", "unshare", "setns",
	"mount", "umount2", "pivot_root",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
	"sethostname",
}

func main() {
	caps := []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETFCAP"}
	sp := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps}}}
	profile := seccomp.DefaultProfile(sp)
	// The default allows clone only without namespace flags (an argument filter); kiln's rule
	// comes first and allows the calls whatever their arguments.
	profile.Syscalls = append([]specs.LinuxSyscall{{Names: kilnCalls, Action: specs.ActAllow}}, profile.Syscalls...)
	out, err := json.MarshalIndent(profile, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "seccomp:", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
}
