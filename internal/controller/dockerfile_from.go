package controller

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// watchedImage is the image an ImageChange trigger of bc watches: the trigger's From, else
// the builder image of a Source strategy, else the base image of the final stage (or of the
// target stage) of the inline Dockerfile. A Dockerfile that comes with the source (git or an
// upload) is not fetched: such a BuildConfig must name the image.
func watchedImage(bc *kilnv1.BuildConfig, tr *kilnv1.ImageChangeTrigger) (string, error) {
	if tr != nil && tr.From != "" {
		return tr.From, nil
	}
	if s := bc.Spec.Strategy.Source; s != nil && s.From != "" {
		return s.From, nil
	}
	src := bc.Spec.Source
	if src.Dockerfile == nil {
		switch {
		case src.Git != nil:
			return "", errors.New("set imageChange.from: the Dockerfile is in git")
		case src.Binary != nil:
			return "", errors.New("set imageChange.from: the Dockerfile is uploaded with each build")
		default:
			return "", errors.New("set imageChange.from: the BuildConfig has no inline Dockerfile")
		}
	}
	var target string
	args := map[string]string{}
	var unknown []string
	if d := bc.Spec.Strategy.Docker; d != nil {
		target = d.Target
		for _, a := range d.BuildArgs {
			if a.ValueFrom != nil {
				unknown = append(unknown, a.Name)
				continue
			}
			args[a.Name] = a.Value
		}
	}
	return finalBaseImage(*src.Dockerfile, target, args, unknown)
}

// finalBaseImage reads the image a Dockerfile's final stage (or its target stage) is built
// on, following stage names back to an image, and expanding the global ARGs with buildArgs
// as docker does. It fails for FROM scratch and for a reference that uses an ARG whose value
// it cannot know: one that is not declared before the first FROM, or a build arg in unknown
// (set from a Secret or ConfigMap).
func finalBaseImage(dockerfile, target string, buildArgs map[string]string, unknown []string) (string, error) {
	res, err := parser.Parse(strings.NewReader(dockerfile))
	if err != nil {
		return "", fmt.Errorf("parsing the inline Dockerfile: %w", err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return "", fmt.Errorf("parsing the inline Dockerfile: %w", err)
	}
	if len(stages) == 0 {
		return "", errors.New("set imageChange.from: the inline Dockerfile has no FROM")
	}
	lex := shell.NewLex(res.EscapeToken)
	env := argEnv{}
	opaque := map[string]bool{}
	for _, name := range unknown {
		opaque[name] = true
	}
	for _, cmd := range metaArgs {
		for _, kv := range cmd.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				env[kv.Key] = v
				continue
			}
			if kv.Value == nil {
				if _, ok := env[kv.Key]; !ok {
					env[kv.Key] = ""
				}
				continue
			}
			r, err := lex.ProcessWordWithMatches(*kv.Value, env)
			if err != nil {
				return "", fmt.Errorf("expanding ARG %s of the inline Dockerfile: %w", kv.Key, err)
			}
			if usesAny(r.Matched, opaque) || len(r.Unmatched) > 0 {
				opaque[kv.Key] = true
			}
			env[kv.Key] = r.Result
		}
	}

	i := len(stages) - 1
	if target != "" {
		i = stageIndex(stages, target, len(stages))
		if i < 0 {
			return "", fmt.Errorf("the target stage %q is not in the inline Dockerfile", target)
		}
	}
	for {
		base := stages[i].BaseName
		r, err := lex.ProcessWordWithMatches(base, env)
		if err != nil {
			return "", fmt.Errorf("expanding FROM %s of the inline Dockerfile: %w", base, err)
		}
		if len(r.Unmatched) > 0 || usesAny(r.Matched, opaque) {
			var names []string
			for n := range r.Unmatched {
				names = append(names, n)
			}
			for n := range r.Matched {
				if opaque[n] {
					names = append(names, n)
				}
			}
			sort.Strings(names)
			return "", fmt.Errorf("set imageChange.from: FROM %s uses build args whose value is not known here (%s)", base, strings.Join(names, ", "))
		}
		ref := r.Result
		if j := stageIndex(stages, ref, i); j >= 0 {
			i = j
			continue
		}
		switch {
		case ref == "":
			return "", fmt.Errorf("set imageChange.from: FROM %s expands to nothing", base)
		case strings.EqualFold(ref, "scratch"):
			return "", errors.New("set imageChange.from: the final stage is built FROM scratch")
		}
		return ref, nil
	}
}

// stageIndex is the index of the stage called name among the first n stages, or -1.
func stageIndex(stages []instructions.Stage, name string, n int) int {
	for j := 0; j < n && j < len(stages); j++ {
		if stages[j].Name != "" && strings.EqualFold(stages[j].Name, name) {
			return j
		}
	}
	return -1
}

// usesAny reports whether a variable in used is one of set.
func usesAny(used map[string]struct{}, set map[string]bool) bool {
	for n := range used {
		if set[n] {
			return true
		}
	}
	return false
}

// argEnv is the values of the global ARGs, as the shell lexer reads them.
type argEnv map[string]string

// Get returns the value of ARG k.
func (e argEnv) Get(k string) (string, bool) {
	v, ok := e[k]
	return v, ok
}

// Keys returns the names of the ARGs, sorted.
func (e argEnv) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
