package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// rssInterval is how often the builder's process tree is sampled.
const rssInterval = 50 * time.Millisecond

// processStats is what runMeasured observed of one command.
type processStats struct {
	wall    time.Duration
	peakRSS int64 // the highest sum of VmRSS over the process tree, in bytes
	// peakOwnRSS is the highest sum over the processes of the tree that run the builder's
	// own binary: the builder without the programs its RUN steps start.
	peakOwnRSS int64
	err        error
}

// runMeasured runs cmd with its output appended to out, timing it from start
// to exit and sampling the summed VmRSS of its process tree every
// rssInterval, in all and over the processes running ownExe.
func runMeasured(cmd *exec.Cmd, out io.Writer, ownExe string) processStats {
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return processStats{err: fmt.Errorf("starting %s: %w", cmd.Path, err)}
	}
	stop := make(chan struct{})
	peak := make(chan [2]int64)
	go func() {
		var highest [2]int64
		tick := time.NewTicker(rssInterval)
		defer tick.Stop()
		for {
			if total, own, err := treeRSS("/proc", cmd.Process.Pid, ownExe); err == nil {
				highest[0], highest[1] = max(highest[0], total), max(highest[1], own)
			}
			select {
			case <-stop:
				peak <- highest
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	close(stop)
	p := <-peak
	return processStats{wall: wall, peakRSS: p[0], peakOwnRSS: p[1], err: err}
}

// diskUsage is what du would say of root: allocated blocks (st_blocks) of
// every entry, directories included, each hard-linked inode counted once.
func diskUsage(root string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", path)
		}
		if st.Nlink > 1 && !info.IsDir() {
			key := inode{uint64(st.Dev), st.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measuring the disk use of %s: %w", root, err)
	}
	return total, nil
}
