package sandbox

import (
	"errors"
	"os"
	"os/user"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// readProcValue returns the trimmed content of a /proc file, or "" if unreadable.
func readProcValue(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// seccompMode returns the "Seccomp:" field of /proc/self/status: "0" none,
// "1" strict, "2" filter, or "" when the kernel does not say.
func seccompMode() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// userNamespaceBlockers lists what on this host forbids creating user
// namespaces, each with its remedy.
func userNamespaceBlockers() []string {
	var out []string
	if readProcValue("/proc/sys/kernel/unprivileged_userns_clone") == "0" && os.Geteuid() != 0 {
		out = append(out, "user namespaces disabled: sysctl -w kernel.unprivileged_userns_clone=1")
	}
	if readProcValue("/proc/sys/user/max_user_namespaces") == "0" {
		out = append(out, "user namespaces disabled (user.max_user_namespaces=0): sysctl -w user.max_user_namespaces=15000")
	}
	if readProcValue("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" && os.Geteuid() != 0 {
		out = append(out, "AppArmor restricts unprivileged user namespaces: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, "+
			"or give kiln an AppArmor profile with the \"userns,\" rule")
	}
	if seccompMode() == "2" {
		out = append(out, "this process runs under a seccomp filter that may forbid unshare/clone with namespace flags, mount and pivot_root "+
			"(Kubernetes RuntimeDefault does): use seccompProfile type Unconfined, or a Localhost profile that adds exactly those calls")
	}
	return out
}

// userNamespaceRemedy explains a failure to create namespaces, or returns ""
// when err is not that kind of failure.
func userNamespaceRemedy(err error) string {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EACCES) {
		return ""
	}
	b := userNamespaceBlockers()
	if len(b) == 0 {
		return " (the kernel refused to create the namespaces; run `kiln doctor` to see why)"
	}
	return ": " + strings.Join(b, "; ")
}

// currentUserName returns the login name of the real uid, or the uid as text.
func currentUserName() string {
	uid := strconv.Itoa(os.Getuid())
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return uid
}
