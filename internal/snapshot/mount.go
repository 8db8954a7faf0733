package snapshot

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// overlayFlags turn off every overlayfs feature that would write its own metadata into the
// upper dir (index, metacopy, redirects) or needs xattrs kiln cannot set in a user namespace;
// userxattr (set separately) keeps overlay's own xattrs under user.overlay.*, as the overlay
// format demands. userxattr requires redirect_dir=nofollow ("off" means "follow" by default):
// renaming a lower directory then fails with EXDEV and tools fall back to copying it.
func overlayFlags() [][2]string {
	return [][2]string{{"index", "off"}, {"metacopy", "off"}, {"redirect_dir", "nofollow"}, {"xino", "off"}}
}

// mountFlags are the per-snapshotter overlay options.
type mountFlags struct {
	volatile bool // mount with "volatile" where the kernel knows it (5.10+)
}

// mountOverlay mounts an overlay of lowers (bottom first) with upper and work on target. It
// uses the new mount API, one lowerdir+ per layer (kernel 6.8+), so the stack is not bounded
// by the one page of mount(2)'s data; on older kernels it falls back to mount(2).
func mountOverlay(lowers []string, upper, work, target string, flags mountFlags) error {
	err := fsmountOverlay(lowers, upper, work, target, flags)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, errNoLowerdirPlus) {
		return legacyMountOverlay(lowers, upper, work, target, flags)
	}
	return err
}

var errNoLowerdirPlus = errors.New("kernel lacks overlay lowerdir+")

func fsmountOverlay(lowers []string, upper, work, target string, flags mountFlags) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(key, value string) error {
		if err := unix.FsconfigSetString(fsfd, key, value); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w", key, value, err)
		}
		return nil
	}
	if err := set("source", "kiln"); err != nil {
		return err
	}
	for i := len(lowers) - 1; i >= 0; i-- { // lowerdir+ adds each layer below the previous
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", lowers[i]); err != nil {
			if i == len(lowers)-1 && errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w: %v", errNoLowerdirPlus, err)
			}
			return fmt.Errorf("overlay lower dir %s: %w", lowers[i], err)
		}
	}
	if err := set("upperdir", upper); err != nil {
		return err
	}
	if err := set("workdir", work); err != nil {
		return err
	}
	if err := unix.FsconfigSetFlag(fsfd, "userxattr"); err != nil {
		return fmt.Errorf("overlay option userxattr: %w", err)
	}
	for _, f := range overlayFlags() {
		if err := set(f[0], f[1]); err != nil {
			return err
		}
	}
	// A kernel without "volatile" refuses the flag (EINVAL); the mount then syncs as usual.
	if flags.volatile {
		_ = unix.FsconfigSetFlag(fsfd, "volatile")
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("creating overlay (upper %s): %w", upper, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching overlay at %s: %w", target, err)
	}
	return nil
}

// legacyMountOverlay mounts with mount(2), for kernels before 6.8; its data must fit in one
// page, which bounds how many lowers it can stack.
func legacyMountOverlay(lowers []string, upper, work, target string, flags mountFlags) error {
	escaped := make([]string, len(lowers))
	for i := range lowers {
		escaped[len(lowers)-1-i] = escapeOverlayPath(lowers[i]) // topmost first
	}
	opts := []string{"lowerdir=" + strings.Join(escaped, ":"), "upperdir=" + escapeOverlayPath(upper),
		"workdir=" + escapeOverlayPath(work), "userxattr"}
	for _, f := range overlayFlags() {
		opts = append(opts, f[0]+"="+f[1])
	}
	data := strings.Join(opts, ",")
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("overlay of %d lowers: mount options exceed a page (%d bytes) and this kernel lacks lowerdir+ (6.8+)", len(lowers), len(data))
	}
	if flags.volatile {
		if err := unix.Mount("kiln", target, "overlay", 0, data+",volatile"); err == nil {
			return nil
		}
		// Before 5.10 the option is unknown: mount without it.
	}
	if err := unix.Mount("kiln", target, "overlay", 0, data); err != nil {
		return fmt.Errorf("mounting overlay at %s: %w", target, err)
	}
	return nil
}

// escapeOverlayPath escapes the characters overlayfs's option parser splits on.
func escapeOverlayPath(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	return r.Replace(p)
}
