package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// fakeProc writes a /proc with the given processes: pid -> (ppid, VmRSS kB,
// comm). A negative rss writes a status without a VmRSS line (a kernel
// thread).
func fakeProc(t *testing.T, procs map[int][3]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := strconv.Itoa(pid) + " (" + p[2] + ") S " + p[0] + " 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 100 1000 50\n"
		status := "Name:\t" + p[2] + "\nState:\tS (sleeping)\n"
		if p[1] != "" {
			status += "VmPeak:\t  99999 kB\nVmRSS:\t" + p[1] + " kB\nRssAnon:\t1 kB\n"
		}
		for name, content := range map[string]string{"stat": stat, "status": status} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Entries that are not processes are ignored.
	if err := os.WriteFile(filepath.Join(root, "meminfo"), []byte("MemTotal: 1 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestTreeRSSFakeProc(t *testing.T) {
	proc := fakeProc(t, map[int][3]string{
		1:  {"0", "1000", "init"},
		2:  {"0", "", "kthreadd"},
		10: {"1", "100", "builder"},
		11: {"10", "20", "weird) name (x"},
		12: {"11", "3", "sh"},
		13: {"10", "", "zombie"},
		20: {"1", "5000", "unrelated"},
	})
	for _, tc := range []struct {
		root int
		want int64
	}{
		{10, (100 + 20 + 3) * 1024},
		{11, (20 + 3) * 1024},
		{12, 3 * 1024},
		{99, 0}, // gone
		{1, (1000 + 100 + 20 + 3 + 5000) * 1024},
	} {
		got, own, err := treeRSS(proc, tc.root, "")
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want || own != 0 {
			t.Errorf("treeRSS(%d) = %d, own %d; want %d, own 0", tc.root, got, own, tc.want)
		}
	}
}

func TestStatPPID(t *testing.T) {
	for in, want := range map[string]int{
		"42 (sh) S 7 42 42":             7,
		"42 (a) b) (c) R 9 1 1":         9,
		"42 (with space) S 123 1 1 0 0": 123,
	} {
		got, ok := statPPID([]byte(in))
		if !ok || got != want {
			t.Errorf("statPPID(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "42 sh S 7", "42 (sh)"} {
		if _, ok := statPPID([]byte(bad)); ok {
			t.Errorf("statPPID(%q) succeeded", bad)
		}
	}
}

// The real /proc: a child process is counted in this process's tree.
func TestTreeRSSRealProc(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sleep(1) for a child process to measure: %v (coreutils provides it)", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	parents, err := parentPIDs("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(descendants(parents, os.Getpid()), cmd.Process.Pid) {
		t.Fatalf("child %d not among the descendants of %d", cmd.Process.Pid, os.Getpid())
	}
	self := vmRSS("/proc", os.Getpid())
	child := vmRSS("/proc", cmd.Process.Pid)
	if self <= 0 || child <= 0 {
		t.Fatalf("VmRSS: self %d, child %d; want both > 0", self, child)
	}
	childExe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	total, own, err := treeRSS("/proc", os.Getpid(), childExe)
	if err != nil {
		t.Fatal(err)
	}
	if own < child/2 || own > total-self/2 {
		t.Errorf("treeRSS's own part (processes running %s) = %d, want about the child's %d", childExe, own, child)
	}
	// RSS moves a little between reads; the tree must hold at least most of both.
	if total < child+self/2 {
		t.Errorf("treeRSS = %d, want at least child %d + about self %d", total, child, self)
	}
}
