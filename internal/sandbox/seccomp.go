package sandbox

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccomp_data offsets (include/uapi/linux/seccomp.h).
const (
	seccompDataNr   = 0
	seccompDataArch = 4
	seccompDataArg2 = 16 + 2*8 // low 32 bits on little-endian machines
)

// auditArch returns the AUDIT_ARCH value of the machine kiln was built for.
func auditArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, nil
	}
	return 0, fmt.Errorf("the no-sync seccomp filter is not supported on %s", runtime.GOARCH)
}

// noSyncFilter returns a classic BPF seccomp program that makes fsync,
// fdatasync, sync, syncfs, sync_file_range and msync with MS_SYNC return 0
// without doing any work, and allows everything else. A RUN's writes land in
// a snapshot that is committed atomically afterwards, so flushing them to disk
// one file at a time (as dpkg does) only costs time.
func noSyncFilter() ([]unix.SockFilter, error) {
	arch, err := auditArch()
	if err != nil {
		return nil, err
	}
	const (
		ld   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	skipped := []uint32{unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_SYNC, unix.SYS_SYNCFS, unix.SYS_SYNC_FILE_RANGE}
	n := uint8(len(skipped))
	// Layout: 0 ld arch; 1 jeq arch; 2 ld nr; 3..3+n-1 jeq skipped; 3+n jeq msync;
	// 4+n ld arg2; 5+n jset MS_SYNC; 6+n allow; 7+n return 0.
	allow, success := 6+n, 7+n
	prog := []unix.SockFilter{
		{Code: ld, K: seccompDataArch},
		{Code: jeq, K: arch, Jt: 0, Jf: allow - 2},
		{Code: ld, K: seccompDataNr},
	}
	for i, nr := range skipped {
		pc := 3 + uint8(i)
		prog = append(prog, unix.SockFilter{Code: jeq, K: nr, Jt: success - pc - 1})
	}
	prog = append(prog,
		unix.SockFilter{Code: jeq, K: unix.SYS_MSYNC, Jt: 0, Jf: allow - (3 + n) - 1},
		unix.SockFilter{Code: ld, K: seccompDataArg2},
		unix.SockFilter{Code: jset, K: unix.MS_SYNC, Jt: success - (5 + n) - 1, Jf: 0},
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ERRNO}, // errno 0: the call returns 0
	)
	return prog, nil
}

// installNoSyncFilter installs noSyncFilter on the calling thread, which must
// be locked to its goroutine and already have no_new_privs set; children the
// thread forks inherit it.
func installNoSyncFilter() error {
	prog, err := noSyncFilter()
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("installing the no-sync seccomp filter: %w", errno)
	}
	return nil
}
