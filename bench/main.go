// Command bench compares kiln with buildah on real workloads: wall time, the
// peak memory of the builder's whole process tree, the disk its store uses,
// and the size of the image it makes. It is not a test and CI does not run it.
//
//	go run ./bench [-workloads gcc,chrony,...] [-runs 3] [-builders kiln,buildah-overlay,buildah-vfs]
//	               [-out bench] [-user kiln-sub] [-workdir /var/tmp/kiln-bench]
//	make bench BENCHFLAGS='-workloads files-10k -runs 1'
//
// It must run as root: it sets the machine up (test/setup.sh for the peer
// tools, the test registry on 127.0.0.1:5000 and the fixture images; an
// apt-cacher-ng proxy on :3142, warmed by one untimed build of every apt
// workload) and then runs every builder as the unprivileged -user through
// setpriv, each run in a fresh store, builders alternating (A B C A B C ...)
// so that drift on the machine spreads over all of them.
//
// Each workload is a directory under bench/workloads with a Dockerfile. The
// results go to -out: RESULTS.md (tables: median [min–max] over the runs),
// results.png (charts) and results.json (every raw measurement). They are
// rewritten after every workload, so an interrupted run keeps what it measured.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is what the command line asks for, with paths made absolute.
type config struct {
	workloads []string // names, in the order they run
	builders  []string
	runs      int
	outDir    string
	user      string
	workDir   string
	repoRoot  string
	kilnBin   string
	aptProxy  string
	timeout   time.Duration
	keep      bool
	// freshFS gives each run a new ext4 filesystem of its own (freshfs.go).
	freshFS bool
	// warm builds each apt workload once, untimed, before the timed runs.
	warm bool
	// kilnCompression is kiln's --compression, with --disable-compression=false; "" for its
	// default (no compression of an image that stays in the store).
	kilnCompression string
	cmdLine         string
	// render only re-renders RESULTS.md and results.png from outDir/results.json.
	render bool
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var defaults []string
	for _, w := range allWorkloads() {
		if w.inDefault {
			defaults = append(defaults, w.name)
		}
	}
	workloads := fs.String("workloads", strings.Join(defaults, ","), "comma-separated workloads to run (all: "+strings.Join(workloadNames(), ",")+")")
	builders := fs.String("builders", strings.Join(builderNames(), ","), "comma-separated builders to compare")
	runs := fs.Int("runs", 3, "timed runs per builder and workload")
	out := fs.String("out", "bench", "directory for RESULTS.md, results.png and results.json (relative to the repository root)")
	user := fs.String("user", "kiln-sub", "unprivileged user the builders run as (created with subuid ranges if missing)")
	workDir := fs.String("workdir", "/var/tmp/kiln-bench", "scratch directory for stores, contexts and logs (on a filesystem where overlayfs works)")
	kilnBin := fs.String("kiln", "bin/kiln", "kiln binary, relative to the repository root (the default, bin/kiln, is built with `make build` first)")
	aptProxy := fs.String("apt-proxy", "http://127.0.0.1:3142", "apt proxy passed to both builders as --build-arg http_proxy")
	timeout := fs.Duration("timeout", 3*time.Hour, "limit for one build")
	keep := fs.Bool("keep", false, "keep each run's store and context under -workdir (for debugging; uses a lot of disk)")
	freshFS := fs.Bool("fresh-fs", true, "give each run a new ext4 filesystem (a sparse image on a loop device under -workdir), so no run creates files among the last run's just-deleted ones")
	warm := fs.Bool("warm", true, "build each apt workload once, untimed, to fill apt-cacher-ng before timing (-warm=false when it is full already: large's warm-up builds take about 15 minutes)")
	kilnCompression := fs.String("kiln-compression", "", "make kiln compress layers in the build, with --compression gzip or zstd and --disable-compression=false; empty for its default: layers of an image that stays in the store are not compressed")
	render := fs.Bool("render", false, "only re-render RESULTS.md and results.png from the results.json in -out")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := config{
		runs: *runs, user: *user, aptProxy: *aptProxy, timeout: *timeout, keep: *keep, render: *render, freshFS: *freshFS, warm: *warm, kilnCompression: *kilnCompression,
		cmdLine: strings.Join(append([]string{"go run ./bench"}, args...), " "),
	}
	if cfg.runs < 1 {
		return cfg, fmt.Errorf("-runs %d: need at least one run", cfg.runs)
	}
	var err error
	if cfg.workloads, err = pickNames("-workloads", *workloads, workloadNames()); err != nil {
		return cfg, err
	}
	if cfg.builders, err = pickNames("-builders", *builders, builderNames()); err != nil {
		return cfg, err
	}
	if cfg.repoRoot, err = findRepoRoot(); err != nil {
		return cfg, err
	}
	cfg.outDir, cfg.kilnBin = inRepo(cfg.repoRoot, *out), inRepo(cfg.repoRoot, *kilnBin)
	if cfg.workDir, err = filepath.Abs(*workDir); err != nil {
		return cfg, fmt.Errorf("resolving -workdir %s: %w", *workDir, err)
	}
	return cfg, nil
}

// inRepo resolves a relative path against the repository root.
func inRepo(root, path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	return filepath.Join(root, path)
}

// pickNames splits a comma-separated flag value and checks every name is known.
func pickNames(flagName, value string, known []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, n := range strings.Split(value, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		ok := false
		for _, k := range known {
			ok = ok || k == n
		}
		if !ok {
			return nil, fmt.Errorf("%s: unknown name %q (known: %s)", flagName, n, strings.Join(known, ", "))
		}
		seen[n] = true
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no names given", flagName)
	}
	return out, nil
}

// findRepoRoot walks up from the working directory to kiln's go.mod.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/kiln-build/kiln\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("finding the repository root: no go.mod of github.com/kiln-build/kiln above the working directory; run from the repository")
		}
		dir = parent
	}
}

// rerender writes RESULTS.md and results.png again from the results.json in dir.
func rerender(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return fmt.Errorf("re-rendering: %w", err)
	}
	var res results
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("re-rendering: reading results.json: %w", err)
	}
	return writeResults(dir, &res)
}

// run sets up the machine, runs every workload and writes the results.
func run(ctx context.Context, cfg config) error {
	if cfg.render {
		return rerender(cfg.outDir)
	}
	env, err := setUp(ctx, cfg)
	if err != nil {
		return err
	}
	h := newHarness(cfg, env)
	defer h.close()
	res := &results{Meta: collectMeta(ctx, cfg, env)}
	writeAll := func() error { return writeResults(cfg.outDir, res) }

	var selected []workload
	for _, name := range cfg.workloads {
		w, _ := workloadByName(name)
		if note := h.skipReason(w); note != "" {
			log.Printf("%s: skipped: %s", w.name, note)
			res.Notes = append(res.Notes, fmt.Sprintf("%s skipped: %s", w.name, note))
			continue
		}
		selected = append(selected, w)
	}
	if cfg.warm {
		res.Notes = append(res.Notes, h.warmAptProxy(ctx, selected)...)
	} else {
		res.Notes = append(res.Notes, "no untimed warm-up builds (-warm=false): apt-cacher-ng was expected to hold every package already")
	}
	for _, w := range selected {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted before %s: %w", w.name, err)
		}
		log.Printf("%s: %d run(s) of %s", w.name, cfg.runs, strings.Join(h.buildersFor(w), ", "))
		h.runWorkload(ctx, w, res)
		if err := writeAll(); err != nil {
			return err
		}
	}
	if err := writeAll(); err != nil {
		return err
	}
	log.Printf("results: %s, %s, %s", filepath.Join(cfg.outDir, "RESULTS.md"),
		filepath.Join(cfg.outDir, "results.png"), filepath.Join(cfg.outDir, "results.json"))
	return nil
}
