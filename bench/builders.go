package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// builder is one of the compared builders.
type builder struct {
	name string
	// kiln is true for kiln; otherwise it is buildah with storage driver.
	kiln   bool
	driver string
}

func allBuilders() []builder {
	return []builder{
		{name: "kiln", kiln: true},
		{name: "buildah-overlay", driver: "overlay"},
		{name: "buildah-vfs", driver: "vfs"},
	}
}

func builderNames() []string {
	var names []string
	for _, b := range allBuilders() {
		names = append(names, b.name)
	}
	return names
}

func builderByName(name string) (builder, bool) {
	for _, b := range allBuilders() {
		if b.name == name {
			return b, true
		}
	}
	return builder{}, false
}

// runDir is the scratch space of one run of one builder: a copy of the
// build context, a fresh store, and the rest of the builder's state.
type runDir struct {
	root     string
	context  string // the build context, owned by the user
	store    string // kiln --root, or buildah --root
	runRoot  string // buildah --runroot
	tmp      string // TMPDIR (buildah keeps its cache mounts there)
	oci      string // buildah's image pushed as an OCI layout, to be measured
	metadata string // kiln --metadata-file
}

// newRunDir makes a fresh run directory named after its parts, with w's
// build context copied in.
func (h *harness) newRunDir(w workload, parts ...string) (runDir, error) {
	root := filepath.Join(h.env.runsDir, strings.Join(parts, "-"))
	rd := runDir{
		root: root, context: filepath.Join(root, "context"), store: filepath.Join(root, "store"),
		runRoot: filepath.Join(root, "runroot"), tmp: filepath.Join(root, "tmp"),
		oci: filepath.Join(root, "oci"), metadata: filepath.Join(root, "metadata.json"),
	}
	if err := unmountFreshFS(root); err != nil {
		return rd, err
	}
	if err := os.RemoveAll(root); err != nil {
		return rd, fmt.Errorf("clearing %s: %w", root, err)
	}
	if h.cfg.freshFS {
		if err := mountFreshFS(context.Background(), root); err != nil {
			return rd, err
		}
	}
	for _, d := range []string{root, rd.store, rd.runRoot, rd.tmp} {
		if err := h.env.acct.mkdirOwned(d, 0o755); err != nil {
			return rd, err
		}
	}
	if err := h.env.acct.copyTreeOwned(h.contextDir(w), rd.context); err != nil {
		return rd, err
	}
	return rd, nil
}

// resetStore empties the run's store (and buildah's run root) for a build
// that must start from nothing.
func (h *harness) resetStore(rd runDir) error {
	for _, d := range []string{rd.store, rd.runRoot} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("emptying %s: %w", d, err)
		}
		if err := h.env.acct.mkdirOwned(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// removeRunDir deletes rd unless -keep was given.
func (h *harness) removeRunDir(rd runDir) {
	if h.cfg.keep {
		return
	}
	// Unmounting first makes the removal cheap: the filesystem goes with its image.
	if err := unmountFreshFS(rd.root); err != nil {
		h.logf("warning: %v", err)
	}
	if err := os.RemoveAll(rd.root); err != nil {
		h.logf("warning: removing %s: %v", rd.root, err)
	}
}

// ownExe is the resolved path of b's binary, which its own processes run; "" when it
// cannot be found (own memory is then not measured).
func (h *harness) ownExe(b builder) string {
	p := h.env.kilnBin
	if !b.kiln {
		var err error
		if p, err = exec.LookPath("buildah"); err != nil {
			return ""
		}
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return ""
	}
	return p
}

// tag is the name every workload's image gets.
func tag(w workload) string { return "bench/" + w.name }

// buildArgv is the command line that builds rd's context with b. extra
// holds builder-specific flags (cache import and export).
func (h *harness) buildArgv(b builder, w workload, rd runDir, buildArgs, extra []string) []string {
	var argv []string
	if b.kiln {
		argv = []string{h.env.kilnBin, "build", "--root", rd.store, "--metadata-file", rd.metadata, "-t", tag(w)}
		if c := h.cfg.kilnCompression; c != "" {
			// Compress in the build even though the image stays in the store.
			argv = append(argv, "--compression", c, "--disable-compression=false")
		}
	} else {
		argv = []string{"buildah", "--root", rd.store, "--runroot", rd.runRoot, "--storage-driver", b.driver,
			"bud", "--isolation", "chroot", "--layers", "--pull", "--tls-verify=false", "--network", "host", "-t", tag(w)}
	}
	for _, a := range buildArgs {
		argv = append(argv, "--build-arg", a)
	}
	argv = append(argv, extra...)
	return append(argv, rd.context)
}

// buildResult is one build as observed from outside.
type buildResult struct {
	wall                time.Duration
	peakRSS, peakOwnRSS int64
	// runSeconds is the time inside RUN processes (kiln's --metadata-file), nil for buildah.
	runSeconds *float64
	// commitSeconds sums the time kiln spent committing layers, and lastCommitSeconds is
	// the last step's share (kiln's --metadata-file), nil for buildah.
	commitSeconds, lastCommitSeconds *float64
	// digest is the image's manifest digest (kiln's --metadata-file).
	digest string
	log    string
	err    error
}

// kilnMetadata is the part of kiln's --metadata-file the harness reads.
type kilnMetadata struct {
	Digest     string   `json:"digest"`
	RunSeconds *float64 `json:"runSeconds"`
	Steps      []struct {
		CommitSeconds float64 `json:"commitSeconds"`
	} `json:"steps"`
}

// build runs one build of w with b in rd, as the benchmark user, measuring
// it. label names its log file (WORKLOAD-BUILDER-RUN-LABEL.log).
func (h *harness) build(ctx context.Context, b builder, w workload, rd runDir, label string, buildArgs, extra []string) buildResult {
	logPath := filepath.Join(h.env.logsDir, filepath.Base(rd.root)+"-"+label+".log")
	res := buildResult{log: logPath}
	logFile, err := os.Create(logPath)
	if err != nil {
		res.err = fmt.Errorf("creating the build log: %w", err)
		return res
	}
	defer logFile.Close()
	argv := h.buildArgv(b, w, rd, buildArgs, extra)
	fmt.Fprintf(logFile, "$ %s\n", strings.Join(argv, " "))
	os.Remove(rd.metadata)
	ctx, cancel := context.WithTimeout(ctx, h.cfg.timeout)
	defer cancel()
	cmd := h.env.acct.command(ctx, rd.root, h.env.acct.env(h.env.runtimeDir, rd.tmp), argv...)
	st := runMeasured(cmd, logFile, h.ownExe(b))
	res.wall, res.peakRSS, res.peakOwnRSS = st.wall, st.peakRSS, st.peakOwnRSS
	fmt.Fprintf(logFile, "\n# exit: %v, wall %.3fs, peak RSS %s\n", st.err, st.wall.Seconds(), formatBytes(st.peakRSS))
	if st.err != nil {
		res.err = fmt.Errorf("%s build of %s (%s) failed: %v; log: %s", b.name, w.name, label, st.err, logPath)
		return res
	}
	if b.kiln {
		data, err := os.ReadFile(rd.metadata)
		if err != nil {
			res.err = fmt.Errorf("reading kiln's --metadata-file: %w", err)
			return res
		}
		var md kilnMetadata
		if err := json.Unmarshal(data, &md); err != nil {
			res.err = fmt.Errorf("parsing kiln's --metadata-file %s: %w", rd.metadata, err)
			return res
		}
		res.digest, res.runSeconds = md.Digest, md.RunSeconds
		if n := len(md.Steps); n > 0 {
			var sum float64
			for _, st := range md.Steps {
				sum += st.CommitSeconds
			}
			res.commitSeconds, res.lastCommitSeconds = &sum, &md.Steps[n-1].CommitSeconds
		}
	}
	return res
}

// imageOf returns the image a successful build left, with its layers compressed, as an OCI
// layout in rd.oci (not timed). Both builders keep the layers of an image that stays in their
// store uncompressed, so each writes it out as a push would: buildah pushes it to the layout;
// kiln builds it again, every step from its cache, with --output (kiln's store is the layout
// when the build compressed its layers, with -kiln-compression).
func (h *harness) imageOf(ctx context.Context, b builder, w workload, rd runDir, res buildResult) (layoutImage, error) {
	if b.kiln && h.cfg.kilnCompression != "" {
		return readLayoutImage(rd.store, res.digest, "localhost/"+tag(w)+":latest")
	}
	if err := os.RemoveAll(rd.oci); err != nil {
		return layoutImage{}, fmt.Errorf("clearing %s: %w", rd.oci, err)
	}
	if b.kiln {
		out := h.build(ctx, b, w, rd, "export", h.aptArgs(w), []string{"--output", "type=oci,dest=" + rd.oci})
		if out.err != nil {
			return layoutImage{}, fmt.Errorf("writing kiln's image to an OCI layout: %w", out.err)
		}
		return readLayoutImage(rd.oci, "", "latest")
	}
	argv := []string{"buildah", "--root", rd.store, "--runroot", rd.runRoot, "--storage-driver", b.driver,
		"push", "--quiet", "localhost/" + tag(w) + ":latest", "oci:" + rd.oci + ":latest"}
	cmd := h.env.acct.command(ctx, rd.root, h.env.acct.env(h.env.runtimeDir, rd.tmp), argv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return layoutImage{}, fmt.Errorf("pushing buildah's image to an OCI layout (%s): %v: %s", strings.Join(argv, " "), err, lastLine(string(out)))
	}
	return readLayoutImage(rd.oci, "", "latest")
}
