package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// parentPIDs maps every process under procRoot (normally /proc) to its
// parent. Processes that exit while it reads are left out.
func parentPIDs(procRoot string) (map[int]int, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("listing processes in %s: %w", procRoot, err)
	}
	parents := make(map[int]int, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		ppid, ok := statPPID(data)
		if ok {
			parents[pid] = ppid
		}
	}
	return parents, nil
}

// statPPID reads the parent pid from the content of /proc/PID/stat:
// "pid (comm) state ppid ...", where comm may hold spaces and parentheses,
// so the fields are counted from the last ')'.
func statPPID(stat []byte) (int, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// descendants returns root and every process below it in parents.
func descendants(parents map[int]int, root int) []int {
	children := map[int][]int{}
	for pid, ppid := range parents {
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	seen := map[int]bool{root: true}
	for i := 0; i < len(out); i++ {
		for _, c := range children[out[i]] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// vmRSS reads the VmRSS line of /proc/PID/status, in bytes. A process
// without one (a zombie, a kernel thread) or one that exited counts 0.
func vmRSS(procRoot string, pid int) int64 {
	data, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}

// treeRSS sums VmRSS over root and all its descendants, and, as own, over those of them
// running the program ownExe (the builder itself, not the RUN steps it runs; "" for none).
func treeRSS(procRoot string, root int, ownExe string) (total, own int64, err error) {
	parents, err := parentPIDs(procRoot)
	if err != nil {
		return 0, 0, err
	}
	for _, pid := range descendants(parents, root) {
		rss := vmRSS(procRoot, pid)
		total += rss
		if ownExe != "" {
			if exe, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "exe")); err == nil && exe == ownExe {
				own += rss
			}
		}
	}
	return total, own, nil
}
