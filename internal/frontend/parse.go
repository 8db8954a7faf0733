package frontend

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Options are the inputs of Parse besides the Dockerfile text.
type Options struct {
	// File names the Dockerfile in errors and progress.
	File string
	// BuildArgs are the --build-arg values.
	BuildArgs map[string]string
	// Target names the stage to build; "" means the last stage.
	Target string
	// Platform is the target platform ("linux/amd64"); BuildPlatform the builder's. They feed
	// the predefined TARGET* and BUILD* args.
	Platform, BuildPlatform string
}

// Error is a Dockerfile error with the file and line it concerns.
type Error struct {
	File string
	Line int // 0 when unknown
	Err  error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an Error for a line of the plan's Dockerfile.
func (p *Plan) Errorf(line int, format string, args ...any) error {
	return &Error{File: p.File, Line: line, Err: fmt.Errorf(format, args...)}
}

// Parse reads a Dockerfile and returns its Plan.
func Parse(r io.Reader, opts Options) (*Plan, error) {
	if opts.File == "" {
		opts.File = "Dockerfile"
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, &Error{File: opts.File, Err: fmt.Errorf("reading: %w", err)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{File: opts.File, Err: errors.New("the Dockerfile is empty")}
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, locate(opts.File, err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, locate(opts.File, err)
	}
	if len(stages) == 0 {
		return nil, &Error{File: opts.File, Err: errors.New("no FROM instruction: a Dockerfile must start with FROM (after optional ARGs)")}
	}
	p := &Plan{File: opts.File, Escape: res.EscapeToken}
	lex := shell.NewLex(res.EscapeToken)
	p.Args, err = globalArgs(p, lex, metaArgs, opts)
	if err != nil {
		return nil, err
	}
	for i := range stages {
		if stages[i].Name != "" {
			if j, dup := p.StageByName(stages[i].Name, i); dup {
				return nil, p.Errorf(line(stages[i].Location), "duplicate stage name %q (also the name of stage %d on line %d)", stages[i].Name, j+1, p.Stages[j].Line)
			}
		}
		p.Stages = append(p.Stages, &Stage{Index: i, Name: stages[i].Name, BaseStage: -1, Line: line(stages[i].Location)})
	}
	for i := range stages {
		if err := p.fillStage(lex, p.Stages[i], &stages[i]); err != nil {
			return nil, err
		}
	}
	if p.Target, err = p.findTarget(opts.Target); err != nil {
		return nil, err
	}
	p.UnusedBuildArgs = p.unusedBuildArgs(metaArgs, opts.BuildArgs)
	return p, nil
}

// locate turns a BuildKit error carrying a source location into an Error naming the line.
func locate(file string, err error) error {
	line := 0
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		line = le.Locations[0][0].Start.Line
	}
	msg := err.Error()
	var ue *instructions.UnknownInstructionError
	if errors.As(err, &ue) {
		line = ue.Line
		msg = fmt.Sprintf("unknown instruction: %s", ue.Instruction)
	}
	msg = strings.TrimPrefix(msg, "dockerfile parse error on line "+fmt.Sprint(line)+": ")
	return &Error{File: file, Line: line, Err: errors.New(msg)}
}

func globalArgs(p *Plan, lex *shell.Lex, metaArgs []instructions.ArgCommand, opts Options) (map[string]string, error) {
	args := predefinedArgs(opts.Platform, opts.BuildPlatform)
	for _, cmd := range metaArgs {
		for _, kv := range cmd.Args {
			if v, ok := opts.BuildArgs[kv.Key]; ok {
				args[kv.Key] = v
				continue
			}
			if kv.Value == nil {
				if _, ok := args[kv.Key]; !ok {
					args[kv.Key] = ""
				}
				continue
			}
			v, _, err := lex.ProcessWord(*kv.Value, mapEnv(args))
			if err != nil {
				return nil, p.Errorf(line(cmd.Location()), "expanding ARG %s: %v", kv.Key, err)
			}
			args[kv.Key] = v
		}
	}
	return args, nil
}

// predefinedArgs are the platform args BuildKit defines in the global scope.
func predefinedArgs(target, build string) map[string]string {
	args := map[string]string{}
	for prefix, plat := range map[string]string{"TARGET": target, "BUILD": build} {
		parts := strings.SplitN(plat, "/", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		args[prefix+"PLATFORM"] = plat
		args[prefix+"OS"] = parts[0]
		args[prefix+"ARCH"] = parts[1]
		args[prefix+"VARIANT"] = parts[2]
	}
	return args
}

func (p *Plan) fillStage(lex *shell.Lex, s *Stage, st *instructions.Stage) error {
	i := s.Index
	s.Line, s.Commands = line(st.Location), st.Commands
	env := mapEnv(p.Args)
	base, _, err := lex.ProcessWord(st.BaseName, env)
	if err != nil {
		return p.Errorf(s.Line, "expanding FROM %s: %v", st.BaseName, err)
	}
	if base == "" {
		return p.Errorf(s.Line, "FROM %s: the base image name is empty (is the ARG declared before FROM and given a value?)", st.BaseName)
	}
	s.Base = base
	if s.Platform, _, err = lex.ProcessWord(st.Platform, env); err != nil {
		return p.Errorf(s.Line, "expanding FROM --platform: %v", err)
	}
	deps := map[int]bool{}
	if j, ok := p.StageByName(base, i); ok {
		s.BaseStage = j
		deps[j] = true
	}
	for _, cmd := range st.Commands {
		if r, ok := cmd.(*instructions.RunCommand); ok && len(r.CmdLine) == 0 && len(r.Files) == 0 {
			return p.Errorf(line(cmd.Location()), "RUN requires a command")
		}
		for _, from := range readsFrom(cmd) {
			name, _, err := lex.ProcessWord(from, env)
			if err != nil {
				return p.Errorf(line(cmd.Location()), "expanding --from=%s: %v", from, err)
			}
			if j, ok := p.StageByName(name, i); ok {
				deps[j] = true
			} else if _, later := p.StageByName(name, len(p.Stages)); later {
				return p.Errorf(line(cmd.Location()), "--from=%s refers to this or a later stage: a stage can only read from earlier stages", name)
			} else if isAllDigits(name) {
				return p.Errorf(line(cmd.Location()), "--from=%s: there is no stage %s before this one", name, name)
			} else {
				s.SourceImages = append(s.SourceImages, name)
			}
		}
	}
	for d := range deps {
		s.Deps = append(s.Deps, d)
	}
	sort.Ints(s.Deps)
	return nil
}

func readsFrom(cmd instructions.Command) []string {
	switch c := cmd.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			return []string{c.From}
		}
	case *instructions.RunCommand:
		var froms []string
		for _, m := range instructions.GetMounts(c) {
			if m.From != "" {
				froms = append(froms, m.From)
			}
		}
		return froms
	}
	return nil
}

func (p *Plan) findTarget(target string) (int, error) {
	if target == "" {
		return len(p.Stages) - 1, nil
	}
	for i, s := range p.Stages {
		if strings.EqualFold(s.Name, target) {
			return i, nil
		}
	}
	var names []string
	for _, s := range p.Stages {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return 0, &Error{File: p.File, Err: fmt.Errorf("target stage %q not found: no stage is named (name one with FROM ... AS NAME)", target)}
	}
	return 0, &Error{File: p.File, Err: fmt.Errorf("target stage %q not found (stages: %s)", target, strings.Join(names, ", "))}
}

func (p *Plan) unusedBuildArgs(metaArgs []instructions.ArgCommand, buildArgs map[string]string) []string {
	declared := map[string]bool{}
	for _, c := range metaArgs {
		for _, kv := range c.Args {
			declared[kv.Key] = true
		}
	}
	for _, i := range p.Needed() {
		for _, cmd := range p.Stages[i].Commands {
			if a, ok := cmd.(*instructions.ArgCommand); ok {
				for _, kv := range a.Args {
					declared[kv.Key] = true
				}
			}
		}
	}
	var unused []string
	for k := range buildArgs {
		if !declared[k] && !IsProxyArg(k) {
			unused = append(unused, k)
		}
	}
	sort.Strings(unused)
	return unused
}

// IsProxyArg reports whether name is one of Docker's predefined proxy args, which RUN sees
// without an ARG instruction and which are never written into the image or its history.
func IsProxyArg(name string) bool {
	switch strings.ToUpper(name) {
	case "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY":
		return true
	}
	return false
}

// Line returns the first line of an instruction's location, 0 when unknown.
func Line(cmd instructions.Command) int { return line(cmd.Location()) }

func line(r []parser.Range) int {
	if len(r) == 0 {
		return 0
	}
	return r[0].Start.Line
}

func isAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// mapEnv adapts a map to the shell lexer's environment lookup.
type mapEnv map[string]string

func (m mapEnv) Get(k string) (string, bool) { v, ok := m[k]; return v, ok }
func (m mapEnv) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
