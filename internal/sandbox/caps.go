package sandbox

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// runCapabilities is the capability set a RUN process gets as root: Docker's
// default, so that a RUN can chown and bind low ports but cannot mount,
// ptrace, or reach into the builder's namespaces through /proc.
func runCapabilities() []int {
	return []int{
		unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER, unix.CAP_MKNOD,
		unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP, unix.CAP_SETPCAP,
		unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
	}
}

// limitBoundingSet drops every capability but keep from the calling thread's
// bounding set. A process this thread then executes as uid 0 gets exactly
// keep; as any other uid it gets none. The thread itself keeps its own
// capabilities, which it needs to switch credentials in the child.
func limitBoundingSet(keep []int) error {
	last, err := strconv.Atoi(strings.TrimSpace(readProcValue("/proc/sys/kernel/cap_last_cap")))
	if err != nil {
		last = unix.CAP_LAST_CAP
	}
	kept := map[int]bool{}
	for _, c := range keep {
		kept[c] = true
	}
	for c := 0; c <= last; c++ {
		if kept[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// capMask renders caps as the hex mask /proc/PID/status shows.
func capMask(caps []int) string {
	var m uint64
	for _, c := range caps {
		m |= 1 << uint(c)
	}
	return fmt.Sprintf("%016x", m)
}
