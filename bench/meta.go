package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// collectMeta describes the machine, the versions and the command line.
func collectMeta(ctx context.Context, cfg config, env machineEnv) meta {
	m := meta{
		Date:            time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Cores:           runtime.NumCPU(),
		CommandLine:     cfg.cmdLine,
		Runs:            cfg.runs,
		Builders:        cfg.builders,
		Workloads:       cfg.workloads,
		User:            env.acct.name,
		WorkDir:         cfg.workDir,
		FreshFS:         cfg.freshFS,
		KilnCompression: cfg.kilnCompression,
	}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseInt(strings.Fields(procField("/proc/meminfo", "MemTotal") + " 0")[0], 10, 64); err == nil {
		m.MemoryBytes = kb * 1024
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	m.KilnCommit = commandLine(ctx, cfg.repoRoot, "git", "rev-parse", "--short", "HEAD")
	m.BuildahVersion = commandLine(ctx, "", "buildah", "--version")
	return m
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// commandLine returns the first line a command prints, or "unknown".
func commandLine(ctx context.Context, dir string, argv ...string) string {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}
