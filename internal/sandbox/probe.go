package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// runProbe is the body of Detect's throwaway namespace: uid 0 of a fresh user
// namespace, pid 1 of a fresh pid namespace. It tries an overlay mount on the
// directory given as its argument and a fresh procfs mount, and prints a
// probeResult.
func runProbe() {
	res := probeResult{Overlay: "skipped", Proc: "skipped"}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		res.Proc = err.Error()
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
	dir := ""
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	scratch := dir
	if scratch == "" {
		scratch = os.TempDir()
	}
	tmp, err := os.MkdirTemp(scratch, ".kiln-probe-")
	if err != nil {
		res.Proc = err.Error()
		if dir != "" {
			res.Overlay = err.Error()
		}
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
	defer os.RemoveAll(tmp)
	if dir != "" {
		res.Overlay = errText(probeOverlay(tmp))
	}
	res.Proc = errText(probeProc(tmp))
	json.NewEncoder(os.Stdout).Encode(res)
	os.RemoveAll(tmp)
	os.Exit(0)
}

// probeOverlay mounts a one-file overlay in dir and reads the file through it.
func probeOverlay(dir string) error {
	names := []string{"lower", "upper", "work", "merged"}
	for _, n := range names {
		if err := os.Mkdir(filepath.Join(dir, n), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "lower", "probe"), []byte("ok"), 0o644); err != nil {
		return err
	}
	merged := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,userxattr",
		filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount -t overlay -o %s: %w", opts, err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)
	if _, err := os.ReadFile(filepath.Join(merged, "probe")); err != nil {
		return fmt.Errorf("reading through the overlay: %w", err)
	}
	return nil
}

// probeProc mounts a fresh procfs in dir.
func probeProc(dir string) error {
	p := filepath.Join(dir, "proc")
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount -t proc: %w", err)
	}
	return unix.Unmount(p, unix.MNT_DETACH)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
