package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// addProfileFlags registers the hidden --cpuprofile and --memprofile flags on
// root: the bench and developers use them to see where a build spends its
// time (`go tool pprof bin/kiln FILE`). The returned stop function writes the
// profiles and must run after the command.
func addProfileFlags(root *cobra.Command) (stop func() error) {
	var cpuPath, memPath string
	root.PersistentFlags().StringVar(&cpuPath, "cpuprofile", "", "write a CPU profile of kiln (not of RUN steps) to `FILE`")
	root.PersistentFlags().StringVar(&memPath, "memprofile", "", "write a heap profile of kiln to `FILE` when it exits")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	_ = root.PersistentFlags().MarkHidden("memprofile")
	var cpuFile *os.File
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuPath == "" {
			return nil
		}
		f, err := os.Create(cpuPath)
		if err != nil {
			return fmt.Errorf("creating the CPU profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("starting the CPU profile: %w", err)
		}
		cpuFile = f
		return nil
	}
	return func() error {
		if cpuFile != nil {
			pprof.StopCPUProfile()
			if err := cpuFile.Close(); err != nil {
				return fmt.Errorf("writing the CPU profile: %w", err)
			}
		}
		if memPath == "" {
			return nil
		}
		f, err := os.Create(memPath)
		if err != nil {
			return fmt.Errorf("creating the heap profile: %w", err)
		}
		defer f.Close()
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return fmt.Errorf("writing the heap profile: %w", err)
		}
		return nil
	}
}
