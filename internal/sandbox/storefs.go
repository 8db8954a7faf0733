package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fsName names the filesystems a store commonly sits on, by statfs magic.
func fsName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlayfs"
	case 0x2FC12FC1:
		return "zfs"
	case 0x6969:
		return "nfs"
	case 0x65735546:
		return "fuse"
	}
	return fmt.Sprintf("filesystem type 0x%x", magic)
}

// storeFSCheck reports the filesystem of the store (or of its nearest existing parent) and
// its free space. A store on overlayfs cannot hold overlay upper dirs, so kiln falls back to
// copying snapshots there: that is what the remedy says.
func storeFSCheck(storeDir string) Check {
	c := Check{Name: "store"}
	dir := storeDir
	var st unix.Statfs_t
	for {
		err := unix.Statfs(dir, &st)
		if err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, fs.ErrNotExist) || parent == dir {
			c.Detail = fmt.Sprintf("%s: %v", storeDir, err)
			return c
		}
		dir = parent
	}
	name := fsName(int64(st.Type))
	free := float64(st.Bavail) * float64(st.Bsize) / (1 << 30)
	c.OK = name != "overlayfs"
	c.Detail = fmt.Sprintf("%s on %s, %.1f GiB free", storeDir, name, free)
	if !c.OK {
		c.Remedy = "put the store (--root) on a volume that is not overlayfs (a Kubernetes emptyDir or PVC): on overlayfs kiln must copy snapshots, which is much slower"
	}
	return c
}
