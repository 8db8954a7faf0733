package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// floorCompressors are the two floors: what archiving and compressing a
// build's layers costs with standard tools, with no builder involved. zstd -1
// on all cores is the cheap end; pigz at its default level compares with
// kiln's gzip (klauspost/compress at its default level).
func floorCompressors() map[string][]string {
	return map[string][]string{
		"zstd": {"zstd", "-T0", "-1", "-q", "-c"},
		"pigz": {"pigz", "-c"},
	}
}

// timeFloor times `tar -cf - -C DIR . ... | COMPRESSOR > /dev/null` over
// dirs (all in one tar stream, as kiln's layers are in one image).
func timeFloor(ctx context.Context, dirs []string, compressor []string) (time.Duration, error) {
	if len(dirs) == 0 {
		return 0, nil
	}
	args := []string{"-cf", "-"}
	for _, d := range dirs {
		args = append(args, "-C", d, ".")
	}
	tar := exec.CommandContext(ctx, "tar", args...)
	comp := exec.CommandContext(ctx, compressor[0], compressor[1:]...)
	var tarErr, compErr bytes.Buffer
	tar.Stderr, comp.Stderr = &tarErr, &compErr
	pipe, err := tar.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("timing the floor: %w", err)
	}
	comp.Stdin = pipe // comp.Stdout stays nil: /dev/null
	start := time.Now()
	if err := comp.Start(); err != nil {
		return 0, fmt.Errorf("timing the floor: starting %s: %w", compressor[0], err)
	}
	if err := tar.Start(); err != nil {
		comp.Process.Kill()
		comp.Wait()
		return 0, fmt.Errorf("timing the floor: starting tar: %w", err)
	}
	errTar := tar.Wait()
	errComp := comp.Wait()
	elapsed := time.Since(start)
	if errTar != nil {
		return 0, fmt.Errorf("timing the floor: tar %s: %v: %s", strings.Join(dirs, " "), errTar, lastLine(tarErr.String()))
	}
	if errComp != nil {
		return 0, fmt.Errorf("timing the floor: %s: %v: %s", compressor[0], errComp, lastLine(compErr.String()))
	}
	return elapsed, nil
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
