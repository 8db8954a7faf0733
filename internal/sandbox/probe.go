package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// runProbe is the body of Detect's throwaway namespace: uid 0 of a fresh user
// namespace, pid 1 of a fresh pid namespace, in a fresh mount namespace. It
// tries a fresh procfs mount and an overlay mount in the directory given as
// its argument (or its nearest existing parent), and prints a probeResult.
func runProbe() {
	res := probeResult{Overlay: "skipped"}
	if len(os.Args) > 1 && os.Args[1] != "" {
		res.Overlay = errText(probeOverlay(nearestExisting(os.Args[1])))
	}
	res.Proc = errText(probeProc())
	json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// nearestExisting returns dir or its closest existing parent: the store
// directory may not exist yet, but will be created on that filesystem.
func nearestExisting(dir string) string {
	dir = filepath.Clean(dir)
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			return dir
		}
		dir = filepath.Dir(dir)
	}
}

// probeOverlay mounts a one-file overlay in a temp dir under dir and reads the
// file through it.
func probeOverlay(dir string) error {
	tmp, err := os.MkdirTemp(dir, ".kiln-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, n := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(tmp, n), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "lower", "probe"), []byte("ok"), 0o644); err != nil {
		return err
	}
	merged := filepath.Join(tmp, "merged")
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,userxattr",
		filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"))
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount -t overlay on %s: %w", dir, err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)
	if _, err := os.ReadFile(filepath.Join(merged, "probe")); err != nil {
		return fmt.Errorf("reading through the overlay: %w", err)
	}
	return nil
}

// probeProc mounts a fresh procfs over /proc, in this private mount namespace.
func probeProc() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount -t proc: %w", err)
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
