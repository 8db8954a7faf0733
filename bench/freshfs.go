package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// freshFSSize is the size of each run's filesystem image. The file is sparse:
// it takes only what the run writes.
const freshFSSize = "256G"

// Each run can get a filesystem of its own: a new ext4 (with its journal, as
// on a typical node) in a sparse file, on a loop device with direct I/O, so
// the host's page cache does not hold its blocks twice. Why: a run that
// follows the deletion of the last run's store on the same filesystem can be
// several times slower at creating files, and not the same for every builder.
// This machine's root ext4 has no journal, and ext4 without one skips inodes
// deleted in the last 5 to 10 minutes, scanning the bitmaps for others
// (recently_deleted in fs/ext4/ialloc.c). On a new filesystem every builder
// starts alike.

// mountFreshFS makes dir the mount point of a new, empty ext4 filesystem,
// whose image is dir + ".img".
func mountFreshFS(ctx context.Context, dir string) error {
	img := dir + ".img"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the mount point %s: %w", dir, err)
	}
	steps := [][]string{
		{"truncate", "-s", freshFSSize, img},
		// lazy init: mkfs writes a few MiB instead of zeroing inode tables;
		// nodiscard: nothing to discard in a new sparse file.
		{"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", img},
	}
	for _, argv := range steps {
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			_ = os.Remove(img)
			return fmt.Errorf("making a fresh filesystem for %s: %s: %w: %s", dir, strings.Join(argv, " "), err, out)
		}
	}
	dev, err := exec.CommandContext(ctx, "losetup", "--direct-io=on", "--find", "--show", img).Output()
	if err != nil {
		_ = os.Remove(img)
		return fmt.Errorf("attaching %s to a loop device: %w", img, err)
	}
	loop := strings.TrimSpace(string(dev))
	// discard: a deleted file's blocks are punched out of the image at once. Without it the
	// image keeps every block the run ever wrote; buildah-vfs's large builds, which copy and
	// delete whole root filesystems, grew one to 50 GB with 19 GB in use and filled the disk.
	if out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "discard", loop, dir).CombinedOutput(); err != nil {
		_ = exec.Command("losetup", "-d", loop).Run()
		_ = os.Remove(img)
		return fmt.Errorf("mounting %s on %s: %w: %s", loop, dir, err, out)
	}
	// The loop device goes away with the last unmount.
	if out, err := exec.CommandContext(ctx, "losetup", "-d", loop).CombinedOutput(); err != nil {
		return fmt.Errorf("setting %s to detach on unmount: %w: %s", loop, err, out)
	}
	return nil
}

// unmountFreshFS unmounts dir's filesystem and deletes its image. A dir that
// is not a mount point is left to the caller.
func unmountFreshFS(dir string) error {
	mounted, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	// Deepest first: a store can hold mounts of its own left by a killed build.
	for i := len(mounted) - 1; i >= 0; i-- {
		if out, err := exec.Command("umount", "--lazy", mounted[i]).CombinedOutput(); err != nil {
			return fmt.Errorf("unmounting %s: %w: %s", mounted[i], err, out)
		}
	}
	// Truncating frees the blocks even while something still holds the lazily unmounted
	// filesystem (a process a RUN step left behind).
	if err := os.Truncate(dir+".img", 0); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("emptying the filesystem image of %s: %w", dir, err)
	}
	if err := os.Remove(dir + ".img"); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing the filesystem image of %s: %w", dir, err)
	}
	return nil
}

// clearFreshFSs unmounts and empties the run filesystems an interrupted benchmark left in
// runsDir, which is deleted next.
func clearFreshFSs(runsDir string) error {
	imgs, err := filepath.Glob(filepath.Join(runsDir, "*.img"))
	if err != nil {
		return fmt.Errorf("listing left-over filesystem images: %w", err)
	}
	for _, img := range imgs {
		if err := unmountFreshFS(strings.TrimSuffix(img, ".img")); err != nil {
			return err
		}
	}
	return nil
}

// mountsUnder lists the mount points at or below dir, in /proc/self/mountinfo's order
// (parents before children).
func mountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("listing mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, and so on).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
