// Package s2i builds Source-to-Image (s2i) builds with kiln's own planner: Generate turns
// application source plus an s2i builder image into a multi-stage Dockerfile and a build
// context, which kiln then builds like any other (no daemon, no container engine).
//
// It follows the builder image contract of OpenShift's s2i:
//   - the assemble and run scripts are required, save-artifacts and usage optional; each is
//     looked for at --scripts-url (image://DIR: already in the image; file://DIR: on this
//     machine; http(s)://URL: downloaded), then in the source's .s2i/bin, then at the
//     builder's io.openshift.s2i.scripts-url label;
//   - io.openshift.s2i.destination (default /tmp) says where the source (DEST/src), the
//     scripts found outside the image (DEST/scripts) and restored artifacts (DEST/artifacts)
//     go; io.openshift.s2i.assemble-user (or the image's USER) runs assemble;
//   - .s2i/environment sets variables for assemble and the output image, .s2iignore leaves
//     files out of the source;
//   - the output image runs the run script (CMD) and carries the io.openshift.s2i.build.*
//     and io.k8s.display-name labels.
//
// Incremental builds add a stage FROM the previous image that runs its save-artifacts script;
// the tar it writes is bind-mounted into the assemble step and unpacked in DEST/artifacts.
// Runtime images (--runtime-image) add a final stage FROM the runtime image that copies the
// artifacts out of the builder stage. Injected files are bind mounts of the assemble step:
// they never reach a layer.
package s2i

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The labels of the s2i contract that kiln reads from builder and runtime images.
const (
	LabelScriptsURL         = "io.openshift.s2i.scripts-url"
	LabelDestination        = "io.openshift.s2i.destination"
	LabelAssembleUser       = "io.openshift.s2i.assemble-user"
	LabelAssembleInputFiles = "io.openshift.s2i.assemble-input-files"

	// The older names s2i still honours, and the environment variables before them.
	deprecatedLabelScriptsURL  = "io.s2i.scripts-url"
	deprecatedLabelDestination = "io.s2i.destination"
	envScriptsURL              = "STI_SCRIPTS_URL"
	envDestination             = "STI_LOCATION"
)

// The labels kiln sets on the output image, as s2i does.
const (
	LabelBuildImage       = "io.openshift.s2i.build.image"
	LabelSourceLocation   = "io.openshift.s2i.build.source-location"
	LabelSourceContextDir = "io.openshift.s2i.build.source-context-dir"
	LabelCommitID         = "io.openshift.s2i.build.commit.id"
	LabelCommitRef        = "io.openshift.s2i.build.commit.ref"
	LabelCommitAuthor     = "io.openshift.s2i.build.commit.author"
	LabelCommitDate       = "io.openshift.s2i.build.commit.date"
	LabelCommitMessage    = "io.openshift.s2i.build.commit.message"
	LabelDisplayName      = "io.k8s.display-name"
)

// DefaultDestination is where sources and scripts go when the image has no destination label.
const DefaultDestination = "/tmp"

// The layout of the generated build context, next to the Dockerfile.
const (
	uploadDir         = "upload"
	ctxSource         = uploadDir + "/src"
	ctxScripts        = uploadDir + "/scripts"
	ctxArtifacts      = uploadDir + "/artifacts"
	ctxRuntimeScripts = uploadDir + "/runtime-scripts"
	injectionsDir     = "injections"
)

// Where the incremental stage leaves the previous image's artifacts: a directory of that
// throwaway stage, bind-mounted (never copied) into the assemble step.
const (
	savedDir = "/.kiln-s2i"
	savedTar = savedDir + "/artifacts.tar"
)

// The stage names of the generated Dockerfile.
const (
	stagePrevious = "kiln-s2i-previous"
	stageBuilder  = "kiln-s2i-builder"
)

// Image is a builder or runtime image: the reference FROM uses, and its configuration (read
// from the local store or the registry before generating).
type Image struct {
	Ref    string
	Config *v1.ConfigFile
}

func (img Image) labels() map[string]string {
	if img.Config == nil {
		return nil
	}
	return img.Config.Config.Labels
}

func (img Image) user() string {
	if img.Config == nil {
		return ""
	}
	return img.Config.Config.User
}

// env returns the value of an environment variable of the image's config.
func (img Image) env(name string) string {
	if img.Config == nil {
		return ""
	}
	for _, kv := range img.Config.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// scriptsURL returns the image's default scripts location and the label (or variable) that
// gave it.
func (img Image) scriptsURL() (key, url string) {
	for _, k := range []string{LabelScriptsURL, deprecatedLabelScriptsURL} {
		if v := strings.TrimSpace(img.labels()[k]); v != "" {
			return "label " + k, v
		}
	}
	if v := img.env(envScriptsURL); v != "" {
		return "variable " + envScriptsURL, v
	}
	return "", ""
}

// destination returns where s2i puts the source and scripts in the image.
func (img Image) destination() (string, error) {
	dest, key := DefaultDestination, ""
	for _, k := range []string{LabelDestination, deprecatedLabelDestination} {
		if v := strings.TrimSpace(img.labels()[k]); v != "" {
			dest, key = v, "label "+k
			break
		}
	}
	if key == "" {
		if v := img.env(envDestination); v != "" {
			dest, key = v, "variable "+envDestination
		}
	}
	if !path.IsAbs(dest) {
		return "", fmt.Errorf("image %s: %s=%q: the destination must be an absolute path", img.Ref, key, dest)
	}
	dest = path.Clean(dest)
	return dest, checkImagePath(key+" of "+img.Ref, dest)
}

// Mapping is a SOURCE:DEST pair of --inject or --runtime-artifact.
type Mapping struct {
	Source, Dest string
}

// Commit describes the source's git commit, for the commit labels.
type Commit struct {
	ID, Ref, Author, Date, Message string
}

// Options describe one s2i build.
type Options struct {
	// Builder is the builder image.
	Builder Image
	// Tag names the output image ("" leaves it unnamed); it is the io.k8s.display-name label.
	Tag string
	// SourceDir holds the application source; ContextDir is the directory inside it to build
	// ("" is all of it). .s2i/ and .s2iignore are read from there.
	SourceDir, ContextDir string
	// SourceLocation is where the source came from (a git URL or a directory), and Commit its
	// git commit when known: they become labels.
	SourceLocation string
	Commit         *Commit
	// Env are the --environment-file variables then the --env ones; they override those of
	// .s2i/environment.
	Env []EnvVar
	// ScriptsURL is --scripts-url.
	ScriptsURL string
	// AssembleUser overrides the builder's io.openshift.s2i.assemble-user label and USER.
	// When none of the three names a user, assemble runs as DefaultAssembleUser, not root.
	AssembleUser string
	// AllowedUIDs, when not nil, refuses a build whose assemble user (or runtime image's
	// USER) is not a numeric uid in these ranges (--allowed-uids).
	AllowedUIDs UIDRanges
	// Exclude matches the source paths (relative, slash-separated) to leave out.
	Exclude *regexp.Regexp
	// Injections are --inject SOURCE:DEST pairs: SOURCE an absolute path on this machine, DEST
	// a path in the assemble step (relative ones are under the working directory).
	Injections []Mapping
	// Previous is the image an incremental build takes artifacts from; "" builds from scratch.
	Previous string
	// Runtime, when its Ref is set, is the image the artifacts are copied into; the
	// RuntimeArtifacts (absolute path in the builder : directory in the runtime image) say
	// what goes where (default: the runtime image's io.openshift.s2i.assemble-input-files).
	Runtime          Image
	RuntimeArtifacts []Mapping
	// HTTPClient downloads http(s) scripts; nil is http.DefaultClient.
	HTTPClient *http.Client
}

// Plan is what Generate wrote and decided.
type Plan struct {
	// Dockerfile is the path of the generated Dockerfile; ContextDir is the build context.
	Dockerfile, ContextDir string
	// Scripts are the scripts the build uses and where each was found, builder's first.
	Scripts []Script
	// Env is the environment of assemble and of the output image.
	Env []EnvVar
	// Incremental is set when the build restores the previous image's artifacts.
	Incremental bool
	// Excluded are the source paths left out (--exclude, .s2iignore); Skipped the special
	// files (sockets, fifos, devices) a build context cannot hold.
	Excluded, Skipped []string
	// Notes are things the user should know: ignored lines, unusable labels, fallbacks.
	Notes []string
}

// Generate writes the Dockerfile (dir/name) and its build context (in dir) for the s2i build
// opts describes. dir may be a fresh temporary directory or one the user chose; it must not
// already hold a Dockerfile of that name, nor upload/ or injections/.
func Generate(ctx context.Context, opts Options, dir, name string) (*Plan, error) {
	g, err := newGenerator(opts, dir, name)
	if err != nil {
		return nil, err
	}
	if err := g.prepareDir(); err != nil {
		return nil, err
	}
	if err := g.writeContext(ctx); err != nil {
		return nil, err
	}
	text, err := g.dockerfile()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(g.plan.Dockerfile, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("writing the generated Dockerfile: %w", err)
	}
	return g.plan, nil
}

// generator holds what one Generate call works out.
type generator struct {
	opts Options
	dir  string
	plan *Plan
	// srcRoot is the source directory built (SourceDir/ContextDir).
	srcRoot string
	// dest is the builder's destination; assembleUser runs assemble.
	dest, assembleUser string
	// Scripts of the builder: assemble, run (nil with a runtime image), save (nil when there
	// is nothing to restore from), and every one kiln copies into the image.
	assemble, run, save *Script
	uploaded            []Script
	// The runtime stage: its destination, run and assemble-runtime scripts, the ones copied in,
	// and the artifacts.
	runtimeDest                 string
	runtimeRun, runtimeAssemble *Script
	runtimeUploaded             []Script
	artifacts                   []Mapping
	injections                  []Mapping // Source here is the path in the build context
	hasRuntime                  bool
}

func newGenerator(opts Options, dir, name string) (*generator, error) {
	if opts.Builder.Ref == "" || opts.Builder.Config == nil {
		return nil, errors.New("generating the s2i Dockerfile: the builder image and its configuration are required")
	}
	if name == "" || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("generating the s2i Dockerfile: %q is not a file name", name)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("generating the s2i Dockerfile: %w", err)
	}
	g := &generator{opts: opts, dir: abs, hasRuntime: opts.Runtime.Ref != ""}
	g.plan = &Plan{Dockerfile: filepath.Join(abs, name), ContextDir: abs}
	if opts.Previous != "" && g.hasRuntime {
		return nil, errors.New("an incremental build cannot use a runtime image (s2i does not allow it either): drop --incremental or --runtime-image")
	}
	if g.hasRuntime && opts.Runtime.Config == nil {
		return nil, fmt.Errorf("runtime image %s: its configuration is required", opts.Runtime.Ref)
	}
	ctxDir := path.Clean(filepath.ToSlash(opts.ContextDir))
	if strings.HasPrefix(ctxDir, "/") || !filepath.IsLocal(filepath.FromSlash(ctxDir)) {
		return nil, fmt.Errorf("--context-dir %q: give a directory inside the source", opts.ContextDir)
	}
	g.srcRoot = joinRel(opts.SourceDir, ctxDir)
	if fi, err := os.Stat(g.srcRoot); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, fmt.Errorf("the source directory %s: %w", g.srcRoot, err)
	}
	if g.dest, err = opts.Builder.destination(); err != nil {
		return nil, err
	}
	g.assembleUser = opts.AssembleUser
	if g.assembleUser == "" {
		g.assembleUser = strings.TrimSpace(opts.Builder.labels()[LabelAssembleUser])
	}
	if g.assembleUser == "" {
		g.assembleUser = opts.Builder.user()
	}
	if g.assembleUser == "" {
		g.assembleUser = DefaultAssembleUser
		g.note("builder image %s names no user (no USER, no %s label): assemble runs as uid %s, not root; "+
			"a builder that needs root must say USER root, or pass --assemble-user root", opts.Builder.Ref, LabelAssembleUser, DefaultAssembleUser)
	}
	if err := checkUser("the assemble user", g.assembleUser); err != nil {
		return nil, err
	}
	if err := opts.AllowedUIDs.checkAllowed("the assemble user of builder image "+opts.Builder.Ref, g.assembleUser); err != nil {
		return nil, err
	}
	if g.hasRuntime {
		if g.runtimeDest, err = opts.Runtime.destination(); err != nil {
			return nil, err
		}
		if err := checkUser("the USER of runtime image "+opts.Runtime.Ref, opts.Runtime.user()); err != nil {
			return nil, err
		}
		if err := opts.AllowedUIDs.checkAllowed("the USER of runtime image "+opts.Runtime.Ref, opts.Runtime.user()); err != nil {
			return nil, err
		}
		if g.artifacts, err = runtimeArtifacts(opts); err != nil {
			return nil, err
		}
	}
	for i, inj := range opts.Injections {
		if err := checkImagePath("--inject destination", inj.Dest); err != nil {
			return nil, err
		}
		if !filepath.IsAbs(inj.Source) {
			return nil, fmt.Errorf("--inject %s:%s: the source must be an absolute path", inj.Source, inj.Dest)
		}
		g.injections = append(g.injections, Mapping{Source: fmt.Sprintf("%s/%d", injectionsDir, i), Dest: inj.Dest})
	}
	return g, nil
}

// runtimeArtifacts checks the --runtime-artifact mappings, or takes the runtime image's
// io.openshift.s2i.assemble-input-files label ("SRC[:DEST];...") when there are none.
func runtimeArtifacts(opts Options) ([]Mapping, error) {
	list, what := opts.RuntimeArtifacts, "--runtime-artifact"
	if len(list) == 0 {
		what = "label " + LabelAssembleInputFiles + " of " + opts.Runtime.Ref
		for _, s := range strings.Split(opts.Runtime.labels()[LabelAssembleInputFiles], ";") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, ParseMapping(s))
			}
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("runtime image %s: say what to copy into it with --runtime-artifact SRC[:DEST] (it has no %s label)", opts.Runtime.Ref, LabelAssembleInputFiles)
	}
	out := make([]Mapping, 0, len(list))
	for _, m := range list {
		src, dest := path.Clean(m.Source), m.Dest
		if dest == "" {
			dest = "."
		}
		dest = path.Clean(dest)
		switch {
		case !path.IsAbs(m.Source) || src == "/":
			return nil, fmt.Errorf("%s %s:%s: the source must be an absolute path in the builder image, other than /", what, m.Source, m.Dest)
		case strings.ContainsAny(src, "*?["):
			return nil, fmt.Errorf("%s %s: wildcards are not supported", what, m.Source)
		case dest == ".." || strings.HasPrefix(dest, "../"):
			return nil, fmt.Errorf("%s %s:%s: the destination must not leave the working directory", what, m.Source, m.Dest)
		}
		if err := checkImagePath(what, src); err != nil {
			return nil, err
		}
		if err := checkImagePath(what, dest); err != nil {
			return nil, err
		}
		out = append(out, Mapping{Source: src, Dest: dest})
	}
	return out, nil
}

// ParseMapping splits SOURCE[:DEST] at its last colon.
func ParseMapping(s string) Mapping {
	if i := strings.LastIndex(s, ":"); i >= 0 {
		return Mapping{Source: s[:i], Dest: s[i+1:]}
	}
	return Mapping{Source: s}
}

// prepareDir makes dir and checks that nothing there would be overwritten.
func (g *generator) prepareDir() error {
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return fmt.Errorf("making the directory of the generated Dockerfile: %w", err)
	}
	for _, p := range []string{g.plan.Dockerfile, filepath.Join(g.dir, uploadDir), filepath.Join(g.dir, injectionsDir)} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: kiln s2i writes the Dockerfile and its build context there; choose an empty directory", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("checking %s: %w", p, err)
		}
	}
	if rel, err := filepath.Rel(g.srcRoot, g.dir); err == nil && (rel == "." || filepath.IsLocal(rel)) {
		g.note("the generated build context %s is inside the source: a later build of that source will include it", g.dir)
	}
	return nil
}

// writeContext fills the build context: the source, the scripts found outside the images,
// the empty artifacts directory and the injected files.
func (g *generator) writeContext(ctx context.Context) error {
	o := g.opts
	if err := os.Mkdir(filepath.Join(g.dir, uploadDir), 0o755); err != nil {
		return fmt.Errorf("writing the build context: %w", err)
	}
	var err error
	g.plan.Excluded, g.plan.Skipped, err = copySource(g.srcRoot, joinRel(g.dir, ctxSource), o.Exclude)
	if err != nil {
		return err
	}
	srcEnv, notes, err := readSourceEnv(g.srcRoot)
	if err != nil {
		return err
	}
	g.plan.Notes = append(g.plan.Notes, notes...)
	g.plan.Env = mergeEnv(srcEnv, o.Env)
	if err := g.findScripts(ctx); err != nil {
		return err
	}
	if err := writeScripts(joinRel(g.dir, ctxScripts), g.uploaded); err != nil {
		return err
	}
	if err := writeScripts(joinRel(g.dir, ctxRuntimeScripts), g.runtimeUploaded); err != nil {
		return err
	}
	if g.plan.Incremental {
		if err := os.Mkdir(joinRel(g.dir, ctxArtifacts), 0o755); err != nil {
			return fmt.Errorf("writing the build context: %w", err)
		}
	}
	if len(o.Injections) > 0 {
		if err := os.Mkdir(filepath.Join(g.dir, injectionsDir), 0o700); err != nil {
			return fmt.Errorf("writing the build context: %w", err)
		}
	}
	for i, inj := range o.Injections {
		if err := copyReadable(inj.Source, joinRel(g.dir, g.injections[i].Source)); err != nil {
			return fmt.Errorf("--inject %s:%s: %w", inj.Source, inj.Dest, err)
		}
	}
	return nil
}

// findScripts looks up the scripts of the builder and of the runtime image.
func (g *generator) findScripts(ctx context.Context) error {
	o := g.opts
	f, notes, err := newScriptFinder(o.ScriptsURL, g.srcRoot, o.Builder, o.HTTPClient)
	if err != nil {
		return err
	}
	g.plan.Notes = append(g.plan.Notes, notes...)
	required := []string{Assemble, Run}
	if g.hasRuntime {
		required = []string{Assemble}
	}
	for _, name := range required {
		s, err := f.require(ctx, name, "builder image "+o.Builder.Ref)
		if err != nil {
			return err
		}
		g.use(&s, false)
		if name == Assemble {
			g.assemble = &s
		} else {
			g.run = &s
		}
	}
	optional := []string{SaveArtifacts, Usage}
	if g.hasRuntime {
		optional = []string{Run, SaveArtifacts, Usage}
	}
	for _, name := range optional {
		s, ok, err := f.find(ctx, name)
		if err != nil {
			return fmt.Errorf("looking for the %s script: %w", name, err)
		}
		if !ok {
			continue
		}
		// With a runtime image the builder's run script is not needed, but copied when kiln
		// has it (as s2i does), so the builder stage stays a working image.
		g.use(&s, false)
		if name == SaveArtifacts {
			g.save = &s
		}
	}
	if o.Previous != "" {
		if g.save == nil {
			g.note("the builder image has no %s script: building from scratch, without the artifacts of %s", SaveArtifacts, o.Previous)
		} else {
			g.plan.Incremental = true
		}
	}
	if !g.hasRuntime {
		return nil
	}
	rf, notes, err := newScriptFinder(o.ScriptsURL, g.srcRoot, o.Runtime, o.HTTPClient)
	if err != nil {
		return err
	}
	g.plan.Notes = append(g.plan.Notes, notes...)
	s, err := rf.require(ctx, Run, "runtime image "+o.Runtime.Ref)
	if err != nil {
		return err
	}
	g.use(&s, true)
	g.runtimeRun = &s
	s2, ok, err := rf.find(ctx, AssembleRuntime)
	if err != nil {
		return fmt.Errorf("looking for the %s script: %w", AssembleRuntime, err)
	}
	if ok {
		g.use(&s2, true)
		g.runtimeAssemble = &s2
	}
	return nil
}

// use records a script of the builder (or of the runtime image) in the plan, and among those
// to copy into the image when it is not there already.
func (g *generator) use(s *Script, runtime bool) {
	g.plan.Scripts = append(g.plan.Scripts, *s)
	if s.InImage {
		return
	}
	if runtime {
		g.runtimeUploaded = append(g.runtimeUploaded, *s)
	} else {
		g.uploaded = append(g.uploaded, *s)
	}
}

// writeScripts writes scripts, executable, into dir (made only when there are some).
func writeScripts(dir string, scripts []Script) error {
	if len(scripts) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing the scripts: %w", err)
	}
	for _, s := range scripts {
		p := filepath.Join(dir, s.Name)
		if err := os.WriteFile(p, s.data, 0o755); err != nil {
			return fmt.Errorf("writing the %s script: %w", s.Name, err)
		}
		// WriteFile's mode is subject to the umask; scripts must be executable by anyone.
		if err := os.Chmod(p, 0o755); err != nil {
			return fmt.Errorf("writing the %s script: %w", s.Name, err)
		}
	}
	return nil
}

func (g *generator) note(format string, args ...any) {
	g.plan.Notes = append(g.plan.Notes, fmt.Sprintf(format, args...))
}

// checkImagePath refuses paths the generated Dockerfile could not hold as they are: those
// with characters that Dockerfile variable expansion, --mount's comma-separated syntax or its
// quoting would change.
func checkImagePath(what, p string) error {
	if p == "" {
		return fmt.Errorf("%s: the path is empty", what)
	}
	if strings.ContainsAny(p, "$,\"'\\\n\r\x00") {
		return fmt.Errorf("%s %q: kiln does not support $ , quotes, backslashes or line breaks in this path", what, p)
	}
	return nil
}

// userPattern is what USER and COPY --chown accept: a user name or id, optionally :group.
var userPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)

func checkUser(what, u string) error {
	if u == "" || userPattern.MatchString(u) {
		return nil
	}
	return fmt.Errorf("%s %q: give a user name or id, optionally followed by :group", what, u)
}

// isRoot reports a user that is root: files it owns need no --chown.
func isRoot(u string) bool {
	name, _, _ := strings.Cut(u, ":")
	return name == "" || name == "root" || name == "0"
}
