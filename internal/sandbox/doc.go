// Package sandbox is the only part of kiln that creates namespaces and mounts.
//
// It does two things. ReexecInUserNamespace moves the whole kiln process into a
// user namespace at start, with the best id mapping the host allows (the full
// range when kiln is already uid 0, subordinate ranges through newuidmap and
// newgidmap, or a single id), so that kiln is root over its files from then on.
// Run then executes one RUN step in fresh mount, pid, ipc and uts namespaces
// (and a fresh network namespace on request) on top of a rootfs that the caller
// has already mounted, with a minimal /dev, a fresh /proc, and the host's
// resolv.conf and hosts bound in without ever being written into the rootfs.
//
// Both work by re-executing /proc/self/exe in an internal role, so every
// program that uses this package must call MaybeRunChild first thing in main.
// The package knows nothing of images, layers or Dockerfiles.
package sandbox
