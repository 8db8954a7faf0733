package e2e

import (
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// diffAllow names the differences one comparison tolerates. It is the
// "diffIgnore" object of a corpus case.
type diffAllow struct {
	// Paths are absolute paths, shell patterns (path.Match) or "DIR/..." for a
	// whole subtree, whose presence and metadata are not compared.
	Paths []string `json:"paths"`
	// Fields are config field names as compareImages reports them
	// (Env, Cmd, Labels, History, ...) that are not compared.
	Fields []string `json:"fields"`
	// Why says why the difference is right; a case must give it.
	Why string `json:"why"`
}

// knownDifference is a difference between kiln and buildah that kiln makes on
// purpose or that buildah adds on its own. Each one is named and documented,
// and applies to every comparison.
type knownDifference struct {
	name string
	why  string
	// label is a config label key dropped from both sides.
	label string
	// field is a config field (as diffConfigs names them) not compared.
	field string
	// ignorePath, when set, reports whether path p, as the two trees hold it,
	// is this difference; allowed are the comparison's allowed paths.
	ignorePath func(p string, a, b fileTree, allowed []string) bool
}

// knownDifferences lists every difference tolerated in all comparisons.
func knownDifferences() []knownDifference {
	return []knownDifference{{
		name: "history-convention",
		why: "kiln writes history as BuildKit does: no entry for ARG, a layer for a WORKDIR that " +
			"creates its directory, no layer (empty_layer) for a RUN that changed nothing; buildah " +
			"1.28 --layers records ARG, never makes a layer for WORKDIR and makes one for every RUN. " +
			"What the layers add up to is compared through the flattened file trees instead",
		field: "History",
	}, {
		name:  "buildah-version-label",
		why:   "buildah stamps io.buildah.version on every image it builds; kiln adds no tool label",
		label: "io.buildah.version",
	}, {
		name: "run-mount-points",
		why: "buildah leaves the empty files and directories it bind-mounts over during RUN " +
			"(/etc/hosts, /etc/resolv.conf, /proc, ...) in the image; kiln never captures them. " +
			"Tolerated only when the path is in one image alone and empty there " +
			"(ignoring children the case allows, such as /run/secrets)",
		ignorePath: func(p string, a, b fileTree, allowed []string) bool {
			// The mount points buildah's chroot isolation creates for RUN.
			mountPoints := []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev", "/proc", "/run", "/sys"}
			if !contains(mountPoints, p) {
				return false
			}
			_, inA := a[p]
			_, inB := b[p]
			switch {
			case inA && !inB:
				return emptyEntry(a, p, allowed)
			case inB && !inA:
				return emptyEntry(b, p, allowed)
			}
			return false
		},
	}}
}

// emptyEntry reports whether p is an empty regular file or a directory
// without children in tree, other than allowed ones.
func emptyEntry(tree fileTree, p string, allowed []string) bool {
	fi := tree[p]
	switch fi.Type {
	case "reg":
		return fi.Digest == emptySHA256
	case "dir":
		for q := range tree {
			if strings.HasPrefix(q, p+"/") && !pathAllowed(q, allowed) {
				return false
			}
		}
		return true
	}
	return false
}

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// compareImages fails t for every difference between the image in kilnLayout
// and the one in buildahLayout that neither allow nor knownDifferences excuse.
// kilnLayout must hold exactly one image; buildahLayout is what buildahBuild
// returns (a layout with "latest", or a docker archive). Either may be an
// archive (see readLayoutImage).
func compareImages(t *testing.T, kilnLayout, buildahLayout string, allow diffAllow) {
	t.Helper()
	k, err := readLayoutImage(kilnLayout, "")
	if err != nil {
		t.Fatalf("reading kiln's image: %v", err)
	}
	b, err := readLayoutImage(buildahLayout, "latest")
	if err != nil {
		t.Fatalf("reading buildah's image: %v", err)
	}
	diffs, err := diffImages(k, b, allow)
	if err != nil {
		t.Fatalf("comparing %s with %s: %v", kilnLayout, buildahLayout, err)
	}
	const max = 40
	for i, d := range diffs {
		if i == max {
			t.Errorf("... and %d more differences", len(diffs)-max)
			break
		}
		t.Errorf("kiln vs buildah: %s", d)
	}
}

// diffImages lists the differences between images a and b, each as one line.
func diffImages(a, b v1.Image, allow diffAllow) ([]string, error) {
	ca, err := a.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading first config: %w", err)
	}
	cb, err := b.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading second config: %w", err)
	}
	diffs := diffConfigs(ca, cb, allow)
	ta, err := flatten(a)
	if err != nil {
		return nil, fmt.Errorf("flattening first image: %w", err)
	}
	tb, err := flatten(b)
	if err != nil {
		return nil, fmt.Errorf("flattening second image: %w", err)
	}
	return append(diffs, diffTrees(ta, tb, allow)...), nil
}

// configFields extracts the compared config fields by name.
func configFields(cf *v1.ConfigFile) map[string]any {
	c := cf.Config
	labels := map[string]string{}
	for k, v := range c.Labels {
		labels[k] = v
	}
	for _, kd := range knownDifferences() {
		if kd.label != "" {
			delete(labels, kd.label)
		}
	}
	var emptyFlags []bool
	for _, h := range cf.History {
		emptyFlags = append(emptyFlags, h.EmptyLayer)
	}
	return map[string]any{
		"Env": c.Env, "Cmd": c.Cmd, "Entrypoint": c.Entrypoint, "WorkingDir": c.WorkingDir,
		"User": c.User, "ExposedPorts": nonEmpty(c.ExposedPorts), "Volumes": nonEmpty(c.Volumes),
		"Labels": nonEmpty(labels), "StopSignal": c.StopSignal, "Healthcheck": c.Healthcheck,
		"Shell": c.Shell, "OnBuild": c.OnBuild, "History": emptyFlags,
	}
}

// nonEmpty maps an empty map to nil so that absent and {} compare equal.
func nonEmpty[M ~map[K]V, K comparable, V any](m M) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

func diffConfigs(a, b *v1.ConfigFile, allow diffAllow) []string {
	fa, fb := configFields(a), configFields(b)
	var diffs []string
	skip := append([]string(nil), allow.Fields...)
	for _, kd := range knownDifferences() {
		if kd.field != "" {
			skip = append(skip, kd.field)
		}
	}
	for _, name := range sortedKeys(fa) {
		if contains(skip, name) {
			continue
		}
		va, vb := fa[name], fb[name]
		if isEmpty(va) && isEmpty(vb) {
			continue
		}
		if !reflect.DeepEqual(va, vb) {
			diffs = append(diffs, fmt.Sprintf("config %s: %v != %v", name, show(va), show(vb)))
		}
	}
	return diffs
}

func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Map, reflect.String:
		return rv.Len() == 0
	case reflect.Pointer:
		return rv.IsNil()
	}
	return false
}

// show renders a config value as JSON, which quotes strings and shows structs.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

func diffTrees(a, b fileTree, allow diffAllow) []string {
	paths := map[string]bool{}
	for p := range a {
		paths[p] = true
	}
	for p := range b {
		paths[p] = true
	}
	var diffs []string
	for _, p := range sortedKeys(paths) {
		if pathAllowed(p, allow.Paths) || knownPathDifference(p, a, b, allow.Paths) {
			continue
		}
		fa, inA := a[p]
		fb, inB := b[p]
		switch {
		case !inA:
			diffs = append(diffs, fmt.Sprintf("%s: only in second image (%s)", p, fb))
		case !inB:
			diffs = append(diffs, fmt.Sprintf("%s: only in first image (%s)", p, fa))
		case fa != fb:
			diffs = append(diffs, fmt.Sprintf("%s: %s != %s", p, fa, fb))
		}
	}
	return diffs
}

func knownPathDifference(p string, a, b fileTree, allowed []string) bool {
	for _, kd := range knownDifferences() {
		if kd.ignorePath != nil && kd.ignorePath(p, a, b, allowed) {
			return true
		}
	}
	return false
}

// pathAllowed reports whether p matches an allowed path, pattern or subtree.
func pathAllowed(p string, allowed []string) bool {
	for _, a := range allowed {
		if dir, ok := strings.CutSuffix(a, "/..."); ok {
			if p == dir || strings.HasPrefix(p, dir+"/") {
				return true
			}
			continue
		}
		if ok, _ := path.Match(a, p); ok || a == p {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
