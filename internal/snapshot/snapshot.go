// Package snapshot makes writable root filesystems over stacks of overlay-format layer
// directories and turns what changed in them into layers. Two snapshotters share one
// interface and one conformance suite: overlay (overlayfs mounted inside kiln's user
// namespace; the upper dir is the diff) and copy (a plain copy of the lowers, diffed by
// comparison when sealed) for hosts where overlayfs cannot be mounted.
package snapshot

import (
	"context"
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by NewOverlay's error when overlayfs cannot be mounted at the
// snapshotter's root (no user namespace, upper dir on overlayfs, kernel without userxattr, ...).
var ErrUnsupported = errors.New("snapshotter unsupported here")

// Snapshotter makes writable root filesystems over stacks of overlay-format layer directories.
// A Snapshotter is safe for concurrent use; each Active belongs to one caller.
type Snapshotter interface {
	// Prepare makes a new writable rootfs whose initial content is lowers stacked
	// (lowers[0] is the bottom layer; all are overlay-format directories that must not change
	// while the snapshot is active). An empty lowers gives an empty rootfs.
	Prepare(ctx context.Context, lowers []string) (Active, error)
}

// Active is one writable snapshot.
type Active interface {
	// Root is the merged, writable root filesystem.
	Root() string
	// Seal moves the snapshot's changes relative to its lowers, in overlay format, to dest (a
	// path that must not exist yet, on the same filesystem as the snapshotter's root) and
	// releases the snapshot, also when it fails (dest then does not exist). dest can serve as a
	// lower at once, and archive.WriteDiff of dest writes the layer, also while dest is a lower
	// of later snapshots (a lower is only read).
	Seal(ctx context.Context, dest string) error
	// Release unmounts and deletes the snapshot without sealing it. Safe to call after Seal
	// and more than once.
	Release() error
}

// Driver names accepted by New.
const (
	DriverOverlay = "overlay"
	DriverCopy    = "copy"
	DriverAuto    = ""
)

// Options tune a snapshotter.
type Options struct {
	// Durable keeps overlayfs's default of syncing the upper dir's filesystem when a snapshot
	// is unmounted and of honouring fsync inside it. Without it overlays are mounted
	// "volatile" (Linux 5.10+): a RUN step's writes are not forced to disk, which on a
	// step that writes many files saves the seconds the unmount's sync takes. A build's
	// snapshots are scratch space either way: what the store keeps is written and synced
	// by the store.
	Durable bool
}

// New returns the snapshotter driver names, working under root: "overlay", "copy", or ""
// for overlay when it can be mounted there and copy otherwise.
func New(root, driver string, opts Options) (Snapshotter, error) {
	switch driver {
	case DriverOverlay:
		return NewOverlay(root, opts)
	case DriverCopy:
		return NewCopy(root)
	case DriverAuto:
		s, err := NewOverlay(root, opts)
		if errors.Is(err, ErrUnsupported) {
			return NewCopy(root)
		}
		return s, err
	default:
		return nil, fmt.Errorf("unknown snapshotter %q (want overlay, copy, or empty for automatic)", driver)
	}
}
