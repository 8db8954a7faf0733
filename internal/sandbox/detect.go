package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Check is one fact kiln doctor reports.
type Check struct {
	Name   string // what was checked, e.g. "overlay"
	OK     bool   // whether it is fine for kiln
	Detail string // what was found
	Remedy string // the exact fix when !OK; may be set as advice when OK
}

// Report is what the environment allows kiln's sandbox to do.
type Report struct {
	Mapping   Mapping // the mapping ReexecInUserNamespace would use
	MappingOK bool    // whether a user namespace could be created (the probe maps a single id; newuidmap problems show in their own checks)
	Checks    []Check
}

// String renders the report as text for people, one check per line, with the
// remedy under each check that failed.
func (r Report) String() string {
	var b strings.Builder
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %-16s %s\n", mark, c.Name, c.Detail)
		if c.Remedy != "" {
			fmt.Fprintf(&b, "     %-16s fix: %s\n", "", c.Remedy)
		}
	}
	return b.String()
}

// Detect inspects the environment: whether user namespaces may be created,
// which id mapping ReexecInUserNamespace would use and why, newuidmap and
// newgidmap, the user's subordinate ranges, whether overlayfs can be mounted
// in a user namespace on storeDir (by a real mount in a throwaway namespace;
// skipped when storeDir is ""), whether a fresh /proc can be mounted (it
// cannot where /proc is masked), and the process's seccomp and AppArmor
// confinement. The probe needs MaybeRunChild to be called in main.
func Detect(ctx context.Context, storeDir string) Report {
	var r Report
	p, perr := choosePlan()
	probe, startErr := runProbeChild(ctx, storeDir)
	r.Checks = append(r.Checks, userNamespaceCheck(startErr))
	switch {
	case perr != nil:
		r.Checks = append(r.Checks, Check{Name: "id mapping", Detail: perr.Error(), Remedy: "make /proc/self/uid_map readable"})
	default:
		r.Mapping = p.Mapping
		r.MappingOK = startErr == nil
		c := Check{Name: "id mapping", OK: startErr == nil, Detail: p.Mapping.Mode + ": " + p.Why}
		if p.Mapping.Mode == ModeSingle {
			c.Remedy = "to build images that own files as other users, " + singleRemedy()
		}
		r.Checks = append(r.Checks, c)
	}
	// Inside a container newuidmap cannot help (no_new_privs): the mapping remedy says what does.
	if os.Geteuid() != 0 && !inChildUserNamespace() {
		r.Checks = append(r.Checks, idMapToolCheck("newuidmap"), idMapToolCheck("newgidmap"), subIDCheck())
	}
	if storeDir != "" {
		r.Checks = append(r.Checks, storeFSCheck(storeDir))
	}
	if startErr == nil {
		r.Checks = append(r.Checks, probe...)
	}
	r.Checks = append(r.Checks, confinementChecks(startErr == nil)...)
	return r
}

// Plan summarises how kiln will build here: the id mapping and the snapshotter.
func (r Report) Plan() string {
	driver := "copy (overlayfs cannot be mounted on the store)"
	for _, c := range r.Checks {
		if c.Name == "overlay" && c.OK {
			driver = "overlay"
		}
	}
	if !r.MappingOK {
		return "kiln cannot build here: it cannot create a user namespace (see the fixes above)"
	}
	return fmt.Sprintf("kiln will build with the %s id mapping (%d ids) and %s snapshots", r.Mapping.Mode, r.Mapping.Size(), driver)
}

func userNamespaceCheck(startErr error) Check {
	c := Check{Name: "user namespaces", OK: startErr == nil}
	max := readProcValue("/proc/sys/user/max_user_namespaces")
	if startErr == nil {
		c.Detail = "allowed (user.max_user_namespaces=" + max + ")"
		return c
	}
	c.Detail = "cannot create one: " + startErr.Error()
	c.Remedy = strings.Join(userNamespaceBlockers(), "; ")
	if c.Remedy == "" {
		c.Remedy = "allow unprivileged user namespaces on the host (sysctl user.max_user_namespaces > 0) and in the container runtime"
	}
	return c
}

// idMapToolCheck reports whether tool exists and may write id maps for others:
// it must be setuid root or carry file capabilities.
func idMapToolCheck(tool string) Check {
	c := Check{Name: tool}
	p, err := exec.LookPath(tool)
	if err != nil {
		c.Detail = "not found"
		c.Remedy = "apt-get install uidmap (or your distribution's shadow-utils / uidmap package)"
		return c
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		c.Detail = fmt.Sprintf("%s: %v", p, err)
		return c
	}
	setuid := st.Mode&unix.S_ISUID != 0 && st.Uid == 0
	caps := false
	if n, err := unix.Getxattr(p, "security.capability", nil); err == nil && n > 0 {
		caps = true
	}
	switch {
	case setuid:
		c.OK, c.Detail = true, p+" is setuid root"
	case caps:
		c.OK, c.Detail = true, p+" has file capabilities"
	default:
		c.Detail = p + " is neither setuid root nor has file capabilities"
		c.Remedy = fmt.Sprintf("chmod u+s %s (or setcap cap_setuid,cap_setgid+ep %s)", p, p)
	}
	return c
}

// subIDCheck reports the user's /etc/subuid and /etc/subgid entries.
func subIDCheck() Check {
	name, uid := currentUserName(), os.Getuid()
	c := Check{Name: "subuid/subgid"}
	u, erru := readSubIDs("/etc/subuid", name, uid)
	g, errg := readSubIDs("/etc/subgid", name, uid)
	if err := firstErr(erru, errg); err != nil {
		c.Detail = err.Error()
		c.Remedy = "fix the malformed line"
		return c
	}
	c.Detail = fmt.Sprintf("%s: subuid %v, subgid %v", name, u, g)
	c.OK = len(u) > 0 && len(g) > 0
	if !c.OK {
		c.Remedy = subuidRemedy(name)
	}
	return c
}

// confinementChecks reports the process's seccomp and AppArmor confinement. nsOK says whether
// kiln could create its user namespace: a seccomp filter is then evidently one kiln can live
// with, and otherwise a likely cause.
func confinementChecks(nsOK bool) []Check {
	sc := Check{Name: "seccomp", OK: true}
	switch mode := seccompMode(); mode {
	case "0":
		sc.Detail = "no filter"
	case "2":
		sc.Detail = "a filter is active (Seccomp: 2) and lets kiln create its namespaces"
		if !nsOK {
			sc.OK = false
			sc.Detail = "a filter is active (Seccomp: 2); it may be what refuses the user namespace"
			sc.Remedy = "run with seccompProfile type Localhost and kiln's profile (config/seccomp/kiln-seccomp.json: containerd's " +
				"default plus unshare, clone with namespace flags, mount, umount2 and pivot_root), or Unconfined"
		}
	default:
		sc.Detail = "Seccomp: " + mode
	}
	aa := Check{Name: "apparmor", OK: true}
	switch label := readProcValue("/proc/self/attr/current"); {
	case label == "" || label == "unconfined":
		aa.Detail = "unconfined"
	default:
		aa.Detail = "confined by profile " + label
		aa.Remedy = "if mounts fail, run kiln unconfined (container.apparmor.security.beta.kubernetes.io/...: unconfined, or appArmorProfile type Unconfined)"
	}
	return []Check{sc, aa}
}

// probeResult is what the probe child reports on stdout.
type probeResult struct {
	Overlay string // "" ok, "skipped", or the error
	Proc    string // "" ok, or the error
}

// runProbeChild starts a throwaway user, mount and pid namespace with a single
// id mapping and reports overlay and procfs mounts tried in it.
func runProbeChild(ctx context.Context, dir string) ([]Check, error) {
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"kiln-sandbox-probe", dir}
	cmd.Env = append(os.Environ(), envRole+"="+roleProbe)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	out, err := cmd.Output()
	if err != nil {
		if cmd.ProcessState == nil {
			return nil, err
		}
		return nil, fmt.Errorf("probe in a user namespace failed: %v", err)
	}
	var res probeResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("reading probe result: %w", err)
	}
	at := nearestExisting(dir)
	if at != filepath.Clean(dir) {
		at = fmt.Sprintf("%s (the nearest existing parent of %s)", at, dir)
	}
	ov := Check{Name: "overlay", OK: res.Overlay == "", Detail: "overlayfs (userxattr) mounts in a user namespace on " + at}
	switch {
	case res.Overlay == "skipped":
		ov.OK, ov.Detail = true, "not checked (no store directory given)"
	case !ov.OK:
		ov.Detail = "cannot mount overlayfs in a user namespace on " + at + ": " + res.Overlay
		ov.Remedy = "put the store on a filesystem that is not itself overlayfs (in a pod: an emptyDir or a PVC) on kernel >= 5.11; " +
			"otherwise kiln falls back to the slower copying snapshotter"
	}
	pc := Check{Name: "proc", OK: res.Proc == "", Detail: "a fresh /proc can be mounted"}
	if !pc.OK {
		pc.Detail = "/proc is masked, a fresh procfs mount fails (" + res.Proc + "); RUN gets a read-only bind of /proc, which shows the builder's processes"
		pc.Remedy = "run the pod with securityContext.procMount: Unmasked (and hostUsers: false)"
	}
	return []Check{ov, pc}, nil
}
