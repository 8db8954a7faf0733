package sandbox

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mountAt mounts source on target inside root through an O_PATH descriptor, so
// symlinks in the rootfs cannot redirect the mount outside it.
func mountAt(root *os.File, target, source, fstype string, flags uintptr, data string) error {
	f, err := openInRoot(root, target, unix.O_PATH)
	if err != nil {
		return fmt.Errorf("mounting %s on %s: %w", fstype+source, target, err)
	}
	defer f.Close()
	if err := unix.Mount(source, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s (%s) on %s: %w", source, fstype, target, err)
	}
	return nil
}

// bindReadOnly recursively binds source on target and makes the whole tree read-only.
func bindReadOnly(root *os.File, target, source string) error {
	if err := mountAt(root, target, source, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return setReadOnly(root, target)
}

// setReadOnly makes the mount tree on target read-only.
func setReadOnly(root *os.File, target string) error {
	f, err := openInRoot(root, target, unix.O_PATH)
	if err != nil {
		return fmt.Errorf("making %s read-only: %w", target, err)
	}
	defer f.Close()
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("making %s read-only: %w", target, err)
	}
	return nil
}

// setupRootfs builds the sandbox's mount tree on cfg.Rootfs and pivots into it.
func setupRootfs(cfg *initConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if err := unix.Mount(cfg.Rootfs, cfg.Rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding rootfs %s onto itself: %w", cfg.Rootfs, err)
	}
	root, err := os.OpenFile(cfg.Rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening rootfs: %w", err)
	}
	defer root.Close()
	steps := []func(*os.File) error{mountProc, mountDev, mountSys}
	for _, step := range steps {
		if err := step(root); err != nil {
			return err
		}
	}
	for target, source := range cfg.EtcFiles {
		if err := mountAt(root, target, source, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	for _, m := range cfg.Mounts {
		if err := mountExtra(root, m); err != nil {
			return err
		}
	}
	return pivotRoot(cfg.Rootfs)
}

// mountProc mounts a fresh procfs, or where the runtime masks /proc (a fresh
// mount is then refused) a read-only recursive bind of the caller's /proc.
func mountProc(root *os.File) error {
	err := mountAt(root, "/proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err == nil {
		return nil
	}
	if err2 := bindReadOnly(root, "/proc", "/proc"); err2 != nil {
		return fmt.Errorf("%v; falling back to a bind of /proc: %w", err, err2)
	}
	return nil
}

// mountSys mounts sysfs read-only, which the kernel allows only when the
// sandbox owns its network namespace, else binds the caller's /sys read-only.
func mountSys(root *os.File) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY)
	if err := mountAt(root, "/sys", "sysfs", "sysfs", flags, ""); err == nil {
		return nil
	}
	return bindReadOnly(root, "/sys", "/sys")
}

// mountExtra makes one of Spec.Mounts. Run created its mountpoint in the
// rootfs unless it lies in a tmpfs of the sandbox (/dev, or an earlier tmpfs
// mount), where it is created now.
func mountExtra(root *os.File, m Mount) error {
	if err := ensurePath(root, mountpoint{m.Target, mountsDir(m)}, &stubs{parents: map[string]*times{}}); err != nil {
		return fmt.Errorf("creating mountpoint %s: %w", m.Target, err)
	}
	var err error
	switch m.Type {
	case "bind":
		err = mountAt(root, m.Target, m.Source, "", unix.MS_BIND|unix.MS_REC, "")
	case "tmpfs":
		err = mountAt(root, m.Target, "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755")
	default:
		err = fmt.Errorf("mount type %q: want bind or tmpfs", m.Type)
	}
	if err == nil && m.ReadOnly {
		err = setReadOnly(root, m.Target)
	}
	return err
}

// pivotRoot makes rootfs the root and detaches the old root entirely.
func pivotRoot(rootfs string) error {
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("entering rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into %s: %w", rootfs, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering new root: %w", err)
	}
	return nil
}

// mountDev builds a minimal /dev on a tmpfs.
func mountDev(root *os.File) error {
	if err := mountAt(root, "/dev", "tmpfs", "tmpfs", unix.MS_NOSUID, "mode=755,size=65536k"); err != nil {
		return err
	}
	dev, err := openInRoot(root, "/dev", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening sandbox /dev: %w", err)
	}
	defer dev.Close()
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if _, err := os.Stat("/dev/" + name); err != nil {
			continue // the caller has no such device either
		}
		fd, err := unix.Openat(int(dev.Fd()), name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return fmt.Errorf("creating /dev/%s: %w", name, err)
		}
		unix.Close(fd)
		if err := mountAt(root, "/dev/"+name, "/dev/"+name, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(int(dev.Fd()), d, 0o755); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", d, err)
		}
	}
	if err := mountAt(root, "/dev/pts", "devpts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		if err2 := mountAt(root, "/dev/pts", "/dev/pts", "", unix.MS_BIND|unix.MS_REC, ""); err2 != nil {
			return fmt.Errorf("%v; falling back to a bind of /dev/pts: %w", err, err2)
		}
	}
	if err := mountAt(root, "/dev/shm", "shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return err
	}
	links := map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	}
	for name, target := range links {
		if err := unix.Symlinkat(target, int(dev.Fd()), name); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", name, err)
		}
	}
	return nil
}
