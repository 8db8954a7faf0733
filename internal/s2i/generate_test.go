package s2i

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/kiln-build/kiln/internal/frontend"
)

const builderRef = "localhost:5000/s2i/builder:1"

func image(ref, user string, labels map[string]string, env ...string) Image {
	return Image{Ref: ref, Config: &v1.ConfigFile{Config: v1.Config{User: user, Labels: labels, Env: env}}}
}

// imageBuilder is a builder whose scripts are inside it, at /usr/libexec/s2i.
func imageBuilder(user string, labels map[string]string) Image {
	l := map[string]string{LabelScriptsURL: "image:///usr/libexec/s2i"}
	for k, v := range labels {
		l[k] = v
	}
	return image(builderRef, user, l)
}

// source makes a source directory with an app file and the given extra entries.
func source(t *testing.T, entries ...string) string {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, append([]string{"app.txt"}, entries...)...)
	return dir
}

// generated is a generated build, parsed back.
type generated struct {
	plan *Plan
	text string
	df   *frontend.Plan
}

func generate(t *testing.T, opts Options) generated {
	t.Helper()
	if opts.SourceLocation == "" {
		opts.SourceLocation = opts.SourceDir
	}
	plan, err := Generate(context.Background(), opts, filepath.Join(t.TempDir(), "out"), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(plan.Dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	df, err := frontend.Parse(bytes.NewReader(data), frontend.Options{File: "Dockerfile", Platform: "linux/amd64", BuildPlatform: "linux/amd64"})
	if err != nil {
		t.Fatalf("the generated Dockerfile does not parse: %v\n%s", err, data)
	}
	t.Logf("generated Dockerfile:\n%s", data)
	return generated{plan: plan, text: string(data), df: df}
}

// commands returns the instructions of type T in stage i, expanded as the solver expands them.
func commands[T instructions.Command](t *testing.T, g generated, i int) []T {
	t.Helper()
	lex := shell.NewLex(g.df.Escape)
	expand := func(word string) (string, error) {
		v, _, err := lex.ProcessWord(word, shell.EnvsFromSlice(nil))
		return v, err
	}
	var out []T
	for _, c := range g.df.Stages[i].Commands {
		if e, ok := c.(instructions.SupportsSingleWordExpansion); ok {
			if err := e.Expand(expand); err != nil {
				t.Fatalf("expanding %v: %v", c, err)
			}
		}
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func copies(t *testing.T, g generated, i int) [][]string {
	t.Helper()
	var out [][]string
	for _, c := range commands[*instructions.CopyCommand](t, g, i) {
		row := []string{"chown=" + c.Chown, "from=" + c.From}
		row = append(row, c.SourcePaths...)
		out = append(out, append(row, c.DestPath))
	}
	return out
}

func users(t *testing.T, g generated, i int) []string {
	t.Helper()
	var out []string
	for _, c := range commands[*instructions.UserCommand](t, g, i) {
		out = append(out, c.User)
	}
	return out
}

func runs(t *testing.T, g generated, i int) []*instructions.RunCommand {
	t.Helper()
	return commands[*instructions.RunCommand](t, g, i)
}

func cmdOf(t *testing.T, g generated, i int) []string {
	t.Helper()
	cs := commands[*instructions.CmdCommand](t, g, i)
	if len(cs) != 1 {
		t.Fatalf("stage %d has %d CMD instructions, want 1", i, len(cs))
	}
	if cs[0].PrependShell {
		t.Errorf("CMD is in shell form: %v", cs[0].CmdLine)
	}
	return cs[0].CmdLine
}

func labelsOf(t *testing.T, g generated, i int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range commands[*instructions.LabelCommand](t, g, i) {
		for _, kv := range c.Labels {
			out[kv.Key] = kv.Value
		}
	}
	return out
}

func envOf(t *testing.T, g generated, i int) []EnvVar {
	t.Helper()
	var out []EnvVar
	for _, c := range commands[*instructions.EnvCommand](t, g, i) {
		for _, kv := range c.Env {
			out = append(out, EnvVar{kv.Key, kv.Value})
		}
	}
	return out
}

func readContext(t *testing.T, g generated, rel string) string {
	t.Helper()
	data, err := os.ReadFile(joinRel(g.plan.ContextDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func origins(p *Plan) map[string]string {
	out := map[string]string{}
	for _, s := range p.Scripts {
		out[s.Name] = s.Origin
	}
	return out
}

func TestBasicBuildFromImageScripts(t *testing.T) {
	src := source(t)
	g := generate(t, Options{Builder: imageBuilder("root", nil), Tag: "app:v1", SourceDir: src})
	if len(g.df.Stages) != 1 {
		t.Fatalf("%d stages, want 1", len(g.df.Stages))
	}
	want := [][]string{{"chown=", "from=", "upload/src", "/tmp/src"}}
	if got := copies(t, g, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("COPY = %q, want %q", got, want)
	}
	r := runs(t, g, 0)
	if len(r) != 1 || len(r[0].CmdLine) != 3 || r[0].CmdLine[0] != "/bin/sh" || !strings.HasSuffix(r[0].CmdLine[2], "; '/usr/libexec/s2i/assemble'") ||
		!strings.HasPrefix(r[0].CmdLine[2], "[ -e '/usr/libexec/s2i/assemble' ] || { echo 'kiln s2i: no assemble script in "+builderRef) {
		t.Errorf("RUN = %+v, want the image's assemble through sh, after a check that it is there", r)
	}
	if got := cmdOf(t, g, 0); !reflect.DeepEqual(got, []string{"/usr/libexec/s2i/run"}) {
		t.Errorf("CMD = %q", got)
	}
	if got := users(t, g, 0); len(got) != 0 {
		t.Errorf("USER = %q, want none: assemble runs as the image's user", got)
	}
	l := labelsOf(t, g, 0)
	for k, v := range map[string]string{
		LabelDisplayName: "app:v1", LabelBuildImage: builderRef,
		LabelSourceLocation: src, LabelScriptsURL: "image:///usr/libexec/s2i",
	} {
		if l[k] != v {
			t.Errorf("label %s = %q, want %q", k, l[k], v)
		}
	}
	if _, err := os.Stat(joinRel(g.plan.ContextDir, ctxScripts)); !os.IsNotExist(err) {
		t.Errorf("upload/scripts exists (%v): no script had to be copied", err)
	}
	if got := readContext(t, g, ctxSource+"/app.txt"); got != "app.txt" {
		t.Errorf("the context's source holds %q", got)
	}
}

func TestScriptLookupOrder(t *testing.T) {
	userDir := t.TempDir()
	writeTree(t, userDir, "assemble")
	src := source(t, ".s2i/bin/assemble", ".s2i/bin/run", ".s2i/bin/save-artifacts")
	g := generate(t, Options{
		Builder:    imageBuilder("root", nil),
		SourceDir:  src,
		ScriptsURL: "file://" + userDir,
	})
	want := map[string]string{
		Assemble:      "--scripts-url",
		Run:           "the source's .s2i/bin",
		SaveArtifacts: "the source's .s2i/bin",
		Usage:         "label " + LabelScriptsURL + " of " + builderRef,
	}
	if got := origins(g.plan); !reflect.DeepEqual(got, want) {
		t.Errorf("origins:\n got %v\nwant %v", got, want)
	}
	if got := readContext(t, g, ctxScripts+"/assemble"); got != "assemble" || !strings.Contains(g.text, "upload/scripts") {
		t.Errorf("upload/scripts/assemble = %q", got)
	}
	if got := readContext(t, g, ctxScripts+"/run"); got != ".s2i/bin/run" {
		t.Errorf("upload/scripts/run = %q, want the source's", got)
	}
	if fi, err := os.Stat(joinRel(g.plan.ContextDir, ctxScripts+"/run")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("upload/scripts/run mode: %v %v, want 0755", fi, err)
	}
	wantCopies := [][]string{
		{"chown=", "from=", "upload/scripts", "/tmp/scripts"},
		{"chown=", "from=", "upload/src", "/tmp/src"},
	}
	if got := copies(t, g, 0); !reflect.DeepEqual(got, wantCopies) {
		t.Errorf("COPY = %q, want %q", got, wantCopies)
	}
	if r := runs(t, g, 0); r[0].CmdLine[2] != "'/tmp/scripts/assemble'" {
		t.Errorf("assemble runs %q", r[0].CmdLine)
	}
	if got := cmdOf(t, g, 0); !reflect.DeepEqual(got, []string{"/tmp/scripts/run"}) {
		t.Errorf("CMD = %q", got)
	}
	if l := labelsOf(t, g, 0); l[LabelScriptsURL] != "image:///tmp/scripts" {
		t.Errorf("scripts-url label = %q, want where run is in the image", l[LabelScriptsURL])
	}

	// image:// as --scripts-url wins over the source's scripts for every script.
	g = generate(t, Options{Builder: image(builderRef, "root", nil), SourceDir: src, ScriptsURL: "image:///opt/s2i"})
	for name, origin := range origins(g.plan) {
		if origin != "--scripts-url" {
			t.Errorf("%s comes from %s, want --scripts-url", name, origin)
		}
	}
	if got := cmdOf(t, g, 0); !reflect.DeepEqual(got, []string{"/opt/s2i/run"}) {
		t.Errorf("CMD = %q", got)
	}
}

func TestScriptsDownloadedOverHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/scripts/assemble" {
			w.Write([]byte("#!/bin/sh\necho downloaded\n"))
			return
		}
		if strings.HasPrefix(r.URL.Path, "/broken/") {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	g := generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: source(t), ScriptsURL: srv.URL + "/scripts/", HTTPClient: srv.Client()})
	if got := readContext(t, g, ctxScripts+"/assemble"); !strings.Contains(got, "echo downloaded") {
		t.Errorf("downloaded assemble = %q", got)
	}
	if o := origins(g.plan); o[Assemble] != "--scripts-url" || o[Run] != "label "+LabelScriptsURL+" of "+builderRef {
		t.Errorf("origins = %v: a 404 must fall through to the next location", o)
	}
	if got := cmdOf(t, g, 0); !reflect.DeepEqual(got, []string{"/usr/libexec/s2i/run"}) {
		t.Errorf("CMD = %q", got)
	}
	// A --scripts-url that does not answer (or answers 500) stops the build.
	for _, u := range []string{srv.URL + "/broken/", "http://127.0.0.1:1/scripts"} {
		_, err := Generate(context.Background(), Options{Builder: imageBuilder("root", nil), SourceDir: source(t), ScriptsURL: u, HTTPClient: srv.Client()}, t.TempDir(), "Dockerfile")
		if err == nil || !strings.Contains(err.Error(), "--scripts-url "+u) {
			t.Errorf("--scripts-url %s: %v, want an error naming it", u, err)
		}
	}
}

func TestMissingRequiredScript(t *testing.T) {
	_, err := Generate(context.Background(), Options{Builder: image(builderRef, "root", nil), SourceDir: source(t, ".s2i/bin/run")}, t.TempDir(), "Dockerfile")
	if err == nil || !strings.Contains(err.Error(), "no assemble script") || !strings.Contains(err.Error(), ".s2i/bin") {
		t.Fatalf("err = %v, want one saying assemble is missing and where to put it", err)
	}
	if err := ParseScriptsURL("/just/a/path"); err == nil {
		t.Error("a --scripts-url without a scheme was accepted")
	}
}

func TestDestinationAndAssembleUserLabels(t *testing.T) {
	labels := map[string]string{LabelDestination: "/opt/s2i/", LabelAssembleUser: "1001"}
	g := generate(t, Options{Builder: imageBuilder("default", labels), SourceDir: source(t)})
	want := [][]string{{"chown=1001", "from=", "upload/src", "/opt/s2i/src"}}
	if got := copies(t, g, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("COPY = %q, want %q", got, want)
	}
	if got := users(t, g, 0); !reflect.DeepEqual(got, []string{"1001", "default"}) {
		t.Errorf("USER = %q, want assemble as 1001, then the image's user back", got)
	}
	if !strings.Contains(g.text, "USER 1001\nRUN ") {
		t.Errorf("assemble does not run right after USER 1001:\n%s", g.text)
	}

	// --assemble-user overrides the label.
	g = generate(t, Options{Builder: imageBuilder("default", labels), SourceDir: source(t), AssembleUser: "2000:0"})
	if got := copies(t, g, 0)[0][0]; got != "chown=2000:0" {
		t.Errorf("COPY %s, want --chown=2000:0", got)
	}
	if got := users(t, g, 0); !reflect.DeepEqual(got, []string{"2000:0", "default"}) {
		t.Errorf("USER = %q", got)
	}

	// Without the label, the image's USER runs assemble and owns the source.
	g = generate(t, Options{Builder: imageBuilder("1001", nil), SourceDir: source(t)})
	if got := copies(t, g, 0)[0][0]; got != "chown=1001" {
		t.Errorf("COPY %s, want --chown=1001", got)
	}
	if got := users(t, g, 0); len(got) != 0 {
		t.Errorf("USER = %q, want none", got)
	}

	// A root builder with a non-root assemble user gets root back afterwards.
	g = generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: source(t), AssembleUser: "app"})
	if got := users(t, g, 0); !reflect.DeepEqual(got, []string{"app", "root"}) {
		t.Errorf("USER = %q", got)
	}

	// The deprecated variable still names the destination; relative ones are refused.
	g = generate(t, Options{Builder: image(builderRef, "root", map[string]string{LabelScriptsURL: "image:///s"}, "STI_LOCATION=/srv"), SourceDir: source(t)})
	if got := copies(t, g, 0)[0]; got[len(got)-1] != "/srv/src" {
		t.Errorf("COPY %q, want /srv/src", got)
	}
	_, err := Generate(context.Background(), Options{Builder: imageBuilder("root", map[string]string{LabelDestination: "tmp"}), SourceDir: source(t)}, t.TempDir(), "Dockerfile")
	if err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative destination: err = %v", err)
	}
}

func TestEnvironmentFromSourceAndFlags(t *testing.T) {
	src := source(t)
	env := "# settings\nAPP_MODE=prod\nFOO=\"from source\"\n\nTRICKY='a \"b\" $HOME \\x'\n"
	writeTree(t, src, ".s2i/")
	if err := os.WriteFile(filepath.Join(src, ".s2i/environment"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	g := generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: src, Env: []EnvVar{{"FOO", "from flag"}, {"BAR", "1"}}})
	want := []EnvVar{{"APP_MODE", "prod"}, {"FOO", "from flag"}, {"TRICKY", `a "b" $HOME \x`}, {"BAR", "1"}}
	if got := envOf(t, g, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("ENV:\n got %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(g.plan.Env, want) {
		t.Errorf("plan env = %q", g.plan.Env)
	}
	// ENV comes before assemble runs.
	if strings.Index(g.text, "ENV ") > strings.Index(g.text, "RUN ") {
		t.Errorf("ENV after RUN:\n%s", g.text)
	}
}

func TestIgnoreAndExcludeApplyToTheContext(t *testing.T) {
	src := source(t, "secret.txt", ".git/config", "sub/.git/x", ".s2iignore")
	if err := os.WriteFile(filepath.Join(src, ".s2iignore"), []byte("secret.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: src, Exclude: regexp.MustCompile(DefaultExclude)})
	got := listTree(t, joinRel(g.plan.ContextDir, ctxSource))
	if want := []string{".s2iignore", "app.txt", "sub"}; !reflect.DeepEqual(got, want) {
		t.Errorf("context source = %v, want %v", got, want)
	}
	if len(g.plan.Excluded) != 3 {
		t.Errorf("Excluded = %v, want .git, sub/.git and secret.txt", g.plan.Excluded)
	}
}

func TestContextDir(t *testing.T) {
	src := source(t, "web/index.html", "web/.s2i/bin/assemble", "other/x")
	g := generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: src, ContextDir: "web"})
	if got := listTree(t, joinRel(g.plan.ContextDir, ctxSource)); !reflect.DeepEqual(got, []string{".s2i", ".s2i/bin", ".s2i/bin/assemble", "index.html"}) {
		t.Errorf("context source = %v", got)
	}
	if origins(g.plan)[Assemble] != "the source's .s2i/bin" {
		t.Errorf("assemble not taken from the context dir's .s2i/bin: %v", origins(g.plan))
	}
	if l := labelsOf(t, g, 0); l[LabelSourceContextDir] != "web" {
		t.Errorf("context-dir label = %q", l[LabelSourceContextDir])
	}
	if _, err := Generate(context.Background(), Options{Builder: imageBuilder("root", nil), SourceDir: src, ContextDir: "../x"}, t.TempDir(), "Dockerfile"); err == nil {
		t.Error("--context-dir ../x was accepted")
	}
}

func TestInjectIsABindMountNeverACopy(t *testing.T) {
	secrets := t.TempDir()
	writeTree(t, secrets, "token", "dir/a", "dir/b")
	if err := os.Chmod(filepath.Join(secrets, "token"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := generate(t, Options{
		Builder:    imageBuilder("1001", nil),
		SourceDir:  source(t),
		Injections: []Mapping{{filepath.Join(secrets, "token"), "/run/secret/token"}, {filepath.Join(secrets, "dir"), "certs"}},
	})
	r := runs(t, g, 0)
	if len(r) != 1 {
		t.Fatalf("%d RUN, want 1", len(r))
	}
	mounts := instructions.GetMounts(r[0])
	if len(mounts) != 2 {
		t.Fatalf("mounts = %+v, want 2", mounts)
	}
	for i, want := range []struct{ source, target string }{{"injections/0", "/run/secret/token"}, {"injections/1", "certs"}} {
		m := mounts[i]
		if m.Type != instructions.MountTypeBind || m.Source != want.source || m.Target != want.target || !m.ReadOnly {
			t.Errorf("mount %d = %+v, want a read-only bind of %s at %s", i, m, want.source, want.target)
		}
	}
	for _, c := range copies(t, g, 0) {
		for _, s := range c {
			if strings.Contains(s, injectionsDir) {
				t.Errorf("COPY %q copies injected files into a layer", c)
			}
		}
	}
	if got := readContext(t, g, "injections/0"); got != "token" {
		t.Errorf("injections/0 = %q", got)
	}
	if fi, err := os.Stat(joinRel(g.plan.ContextDir, "injections/0")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("injections/0 mode = %v, %v: want it readable by the assemble user (0644)", fi.Mode(), err)
	}
	if fi, err := os.Stat(joinRel(g.plan.ContextDir, injectionsDir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("injections/ mode = %v, %v: want it private (0700)", fi.Mode(), err)
	}
	if got := listTree(t, joinRel(g.plan.ContextDir, "injections/1")); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("injections/1 = %v", got)
	}
	if _, err := Generate(context.Background(), Options{Builder: imageBuilder("root", nil), SourceDir: source(t), Injections: []Mapping{{filepath.Join(secrets, "token"), "/a,b"}}}, t.TempDir(), "Dockerfile"); err == nil {
		t.Error("an --inject destination with a comma was accepted")
	}
}

func TestIncrementalStage(t *testing.T) {
	const previous = "localhost:5000/app:v1"
	g := generate(t, Options{Builder: imageBuilder("1001", nil), Tag: previous, SourceDir: source(t), Previous: previous})
	if !g.plan.Incremental {
		t.Fatalf("not incremental; notes: %q", g.plan.Notes)
	}
	if len(g.df.Stages) != 2 || g.df.Stages[0].Base != previous || g.df.Stages[0].Name != stagePrevious {
		t.Fatalf("stages: %+v", g.df.Stages)
	}
	save := runs(t, g, 0)
	if len(save) != 1 || !strings.Contains(save[0].CmdLine[2], "'/usr/libexec/s2i/save-artifacts' > "+savedTar) {
		t.Errorf("save stage RUN = %+v", save)
	}
	if got := users(t, g, 0); !reflect.DeepEqual(got, []string{"1001"}) {
		t.Errorf("save stage USER = %q, want the assemble user", got)
	}
	if got := copies(t, g, 0); !reflect.DeepEqual(got, [][]string{{"chown=1001", "from=", "upload/artifacts", savedDir}}) {
		t.Errorf("save stage COPY = %q", got)
	}
	wantCopies := [][]string{
		{"chown=1001", "from=", "upload/src", "/tmp/src"},
		{"chown=1001", "from=", "upload/artifacts", "/tmp/artifacts"},
	}
	if got := copies(t, g, 1); !reflect.DeepEqual(got, wantCopies) {
		t.Errorf("builder COPY = %q, want %q", got, wantCopies)
	}
	r := runs(t, g, 1)
	if len(r) != 1 {
		t.Fatalf("builder RUN = %+v", r)
	}
	m := instructions.GetMounts(r[0])
	if len(m) != 1 || m[0].From != stagePrevious || m[0].Source != savedTar || m[0].Target != savedTar {
		t.Errorf("assemble mounts = %+v, want the saved tar from %s", m, stagePrevious)
	}
	script := r[0].CmdLine[2]
	if !strings.Contains(script, "tar -xf "+savedTar+" -C '/tmp/artifacts'") || !strings.HasSuffix(script, "'/usr/libexec/s2i/assemble'") {
		t.Errorf("assemble script = %q", script)
	}
	if _, err := os.Stat(joinRel(g.plan.ContextDir, ctxArtifacts)); err != nil {
		t.Errorf("upload/artifacts: %v", err)
	}

	// save-artifacts from the source is bind-mounted into the previous image.
	g = generate(t, Options{Builder: image(builderRef, "root", nil), SourceDir: source(t, ".s2i/bin/assemble", ".s2i/bin/run", ".s2i/bin/save-artifacts"), Previous: previous})
	m = instructions.GetMounts(runs(t, g, 0)[0])
	if len(m) != 1 || m[0].Source != ctxScripts || m[0].Target != "/tmp/scripts" {
		t.Errorf("save stage mounts = %+v, want the context's scripts", m)
	}

	// Without any save-artifacts script, the build is not incremental and says so.
	g = generate(t, Options{Builder: image(builderRef, "root", nil), SourceDir: source(t, ".s2i/bin/assemble", ".s2i/bin/run"), Previous: previous})
	if g.plan.Incremental || len(g.df.Stages) != 1 || len(g.plan.Notes) == 0 || !strings.Contains(g.plan.Notes[0], "save-artifacts") {
		t.Errorf("incremental=%v stages=%d notes=%q", g.plan.Incremental, len(g.df.Stages), g.plan.Notes)
	}
}

func TestRuntimeImageStage(t *testing.T) {
	runtime := image("localhost:5000/runtime:1", "1002", map[string]string{LabelScriptsURL: "image:///usr/libexec/s2i-runtime"})
	g := generate(t, Options{
		Builder:          imageBuilder("root", nil),
		Tag:              "app:v1",
		SourceDir:        source(t),
		Env:              []EnvVar{{"MODE", "prod"}},
		Runtime:          runtime,
		RuntimeArtifacts: []Mapping{{"/opt/app", "/app"}, {"/opt/bin/tool", ""}, {"/opt/lib/", "lib/x"}},
	})
	if len(g.df.Stages) != 2 || g.df.Stages[0].Name != stageBuilder || g.df.Stages[1].Base != runtime.Ref {
		t.Fatalf("stages: %+v", g.df.Stages)
	}
	want := [][]string{
		{"chown=1002", "from=" + stageBuilder, "/opt/app", "/app/app"},
		{"chown=1002", "from=" + stageBuilder, "/opt/bin/tool", "tool"},
		{"chown=1002", "from=" + stageBuilder, "/opt/lib", "lib/x/lib"},
	}
	if got := copies(t, g, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("runtime COPY:\n got %q\nwant %q", got, want)
	}
	if got := cmdOf(t, g, 1); !reflect.DeepEqual(got, []string{"/usr/libexec/s2i-runtime/run"}) {
		t.Errorf("CMD = %q, want the runtime image's run", got)
	}
	r := runs(t, g, 1)
	if len(r) != 1 || !strings.Contains(r[0].CmdLine[2], "if [ -x '/usr/libexec/s2i-runtime/assemble-runtime' ]") {
		t.Errorf("runtime RUN = %+v, want assemble-runtime run when present", r)
	}
	if got := envOf(t, g, 1); !reflect.DeepEqual(got, []EnvVar{{"MODE", "prod"}}) {
		t.Errorf("runtime ENV = %q", got)
	}
	if l := labelsOf(t, g, 1); l[LabelBuildImage] != builderRef || l[LabelDisplayName] != "app:v1" {
		t.Errorf("runtime labels = %v", l)
	}
	if len(commands[*instructions.CmdCommand](t, g, 0)) != 0 {
		t.Error("the builder stage has a CMD: it is not the output")
	}

	// The runtime image's label gives the artifacts when no --runtime-artifact is given.
	runtime.Config.Config.Labels[LabelAssembleInputFiles] = "/opt/app.war:deploy; /opt/data"
	g = generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: source(t), Runtime: runtime})
	want = [][]string{
		{"chown=1002", "from=" + stageBuilder, "/opt/app.war", "deploy/app.war"},
		{"chown=1002", "from=" + stageBuilder, "/opt/data", "data"},
	}
	if got := copies(t, g, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("runtime COPY from the label:\n got %q\nwant %q", got, want)
	}

	for name, opts := range map[string]Options{
		"incremental":   {Previous: "app:v1", RuntimeArtifacts: []Mapping{{"/opt/app", ""}}},
		"relative src":  {RuntimeArtifacts: []Mapping{{"opt/app", ""}}},
		"wildcard":      {RuntimeArtifacts: []Mapping{{"/opt/*.jar", ""}}},
		"escaping dest": {RuntimeArtifacts: []Mapping{{"/opt/app", "../x"}}},
		"no artifacts":  {},
	} {
		opts.Builder, opts.SourceDir = imageBuilder("root", nil), source(t)
		opts.Runtime = image("localhost:5000/runtime:1", "", map[string]string{LabelScriptsURL: "image:///s"})
		if _, err := Generate(context.Background(), opts, t.TempDir(), "Dockerfile"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestRuntimeWithoutRunScript(t *testing.T) {
	_, err := Generate(context.Background(), Options{
		Builder: imageBuilder("root", nil), SourceDir: source(t),
		Runtime: image("busybox", "", nil), RuntimeArtifacts: []Mapping{{"/opt/app", ""}},
	}, t.TempDir(), "Dockerfile")
	if err == nil || !strings.Contains(err.Error(), "no run script for runtime image busybox") {
		t.Errorf("err = %v", err)
	}
}

func TestCommitLabelsAndQuoting(t *testing.T) {
	g := generate(t, Options{
		Builder:        imageBuilder("root", nil),
		Tag:            "registry.example/app:1",
		SourceDir:      source(t),
		SourceLocation: "https://example.com/app.git",
		Commit:         &Commit{ID: "0123abcd", Ref: "main", Author: `A "B" <a@b>`, Date: "Mon Jan 2 15:04:05 2006 -0700", Message: "Fix $PATH\n\nbody \\ line"},
	})
	l := labelsOf(t, g, 0)
	for k, v := range map[string]string{
		LabelSourceLocation: "https://example.com/app.git",
		LabelCommitID:       "0123abcd",
		LabelCommitRef:      "main",
		LabelCommitAuthor:   `A "B" <a@b>`,
		LabelCommitDate:     "Mon Jan 2 15:04:05 2006 -0700",
		LabelCommitMessage:  `Fix $PATH  body \ line`,
	} {
		if l[k] != v {
			t.Errorf("label %s = %q, want %q", k, l[k], v)
		}
	}
}

func TestGenerateRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, "upload/")
	_, err := Generate(context.Background(), Options{Builder: imageBuilder("root", nil), SourceDir: source(t)}, dir, "Dockerfile")
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("err = %v", err)
	}
}

func TestGitSourceHelpers(t *testing.T) {
	for s, want := range map[string]bool{
		"https://github.com/a/b.git#main": true, "git@github.com:a/b.git": true, "ssh://git@host/x": true,
		"./app": false, "/srv/app": false, "file:///srv/app": false, "C:foo": false,
	} {
		if got := IsGitURL(s); got != want {
			t.Errorf("IsGitURL(%q) = %v", s, got)
		}
	}
	if u, r := SplitGitRef("https://h/x.git#v1.2"); u != "https://h/x.git" || r != "v1.2" {
		t.Errorf("SplitGitRef = %q %q", u, r)
	}
	for in, want := range map[string]string{
		"https://user:secret@h/x.git": "https://user@h/x.git",
		"https://token@h/x.git":       "https://h/x.git",
		"ssh://git@h/x.git":           "ssh://git@h/x.git",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if c, origin, err := LocalGitInfo(t.TempDir()); c != nil || origin != "" || err != nil {
		t.Errorf("LocalGitInfo of a plain directory = %v %q %v", c, origin, err)
	}
}
