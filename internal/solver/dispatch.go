package solver

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/kiln-build/kiln/internal/executor"
)

// defaultShell is the shell of shell-form RUN, CMD and ENTRYPOINT when SHELL was not used.
func defaultShell() []string { return []string{"/bin/sh", "-c"} }

// defaultPath is the PATH RUN gets when the image sets none, as Docker gives it.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// dispatch applies one instruction to the stage. prefix marks ONBUILD triggers in history.
func (st *stageState) dispatch(ctx context.Context, cmd instructions.Command, prefix string) error {
	// RUN's Expand only parses its --mount flags with variables expanded; its command line is
	// left to the shell, as Docker does.
	if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
		if err := e.Expand(st.expander()); err != nil {
			return err
		}
	}
	if e, ok := cmd.(instructions.SupportsSingleWordExpansionRaw); ok {
		if err := e.ExpandRaw(st.expander()); err != nil {
			return err
		}
	}
	text := prefix + commandText(cmd)
	switch c := cmd.(type) {
	case *instructions.RunCommand:
		return st.run(ctx, c, text)
	case *instructions.CopyCommand:
		return st.copy(ctx, c, text)
	case *instructions.AddCommand:
		return st.add(ctx, c, text)
	case *instructions.WorkdirCommand:
		return st.workdir(ctx, c, text)
	case *instructions.ArgCommand:
		return st.arg(c)
	}
	st.s.out.printf("%s %s\n", st.s.cfg.Plan.Describe(st.index), text)
	if err := st.applyConfig(cmd); err != nil {
		return err
	}
	return st.configStep(text)
}

// applyConfig handles the instructions that change only the image config.
func (st *stageState) applyConfig(cmd instructions.Command) error {
	c := &st.cfg.Config
	switch cmd := cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range cmd.Env {
			c.Env = setEnv(c.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for _, kv := range cmd.Labels {
			c.Labels[kv.Key] = kv.Value
		}
	case *instructions.ExposeCommand:
		return st.expose(cmd)
	case *instructions.VolumeCommand:
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		for _, v := range cmd.Volumes {
			if v = strings.TrimSpace(v); v == "" {
				return fmt.Errorf("VOLUME specified can not be an empty string")
			}
			c.Volumes[v] = struct{}{}
		}
	case *instructions.UserCommand:
		c.User = cmd.User
	case *instructions.CmdCommand:
		c.Cmd = st.commandLine(cmd.ShellDependantCmdLine)
		c.ArgsEscaped = false
		st.cmdSet = true
	case *instructions.EntrypointCommand:
		c.Entrypoint = st.commandLine(cmd.ShellDependantCmdLine)
		if !st.cmdSet {
			c.Cmd = nil
		}
	case *instructions.ShellCommand:
		c.Shell = append([]string(nil), cmd.Shell...)
	case *instructions.StopSignalCommand:
		c.StopSignal = cmd.Signal
	case *instructions.HealthCheckCommand:
		h := cmd.Health
		c.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	case *instructions.OnbuildCommand:
		c.OnBuild = append(c.OnBuild, cmd.Expression)
	case *instructions.MaintainerCommand:
		st.cfg.Author = cmd.Maintainer
	default:
		return fmt.Errorf("the %s instruction is not supported", strings.ToUpper(cmd.Name()))
	}
	return nil
}

// commandLine turns a CMD/ENTRYPOINT/RUN command line into argv, prepending the shell for the
// shell form.
func (st *stageState) commandLine(c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return append([]string{}, c.CmdLine...)
	}
	sh := st.cfg.Config.Shell
	if len(sh) == 0 {
		sh = defaultShell()
	}
	return append(append([]string{}, sh...), strings.Join(c.CmdLine, " "))
}

func (st *stageState) expose(cmd *instructions.ExposeCommand) error {
	c := &st.cfg.Config
	if c.ExposedPorts == nil {
		c.ExposedPorts = map[string]struct{}{}
	}
	lex := st.s.cfg.Plan.Lexer()
	env := shell.EnvsFromSlice(envSlice(st.env()))
	var ports []string
	for _, p := range cmd.Ports {
		words, err := lex.ProcessWords(p, env)
		if err != nil {
			return fmt.Errorf("expanding %q: %w", p, err)
		}
		ports = append(ports, words...)
	}
	for _, p := range ports {
		port, proto, _ := strings.Cut(p, "/")
		if proto == "" {
			proto = "tcp"
		}
		proto = strings.ToLower(proto)
		if port == "" || strings.Trim(port, "0123456789-") != "" {
			return fmt.Errorf("invalid port %q", p)
		}
		c.ExposedPorts[port+"/"+proto] = struct{}{}
	}
	return nil
}

// arg declares ARGs in the stage: a --build-arg wins, then the default, then the value of a
// global ARG of the same name.
func (st *stageState) arg(c *instructions.ArgCommand) error {
	plan := st.s.cfg.Plan
	for _, kv := range c.Args {
		if v, ok := st.s.cfg.BuildArgs[kv.Key]; ok {
			st.args[kv.Key] = v
		} else if kv.Value != nil {
			st.args[kv.Key] = *kv.Value
		} else if v, ok := plan.Args[kv.Key]; ok {
			st.args[kv.Key] = v
		}
	}
	return nil
}

// workdir sets the working directory (relative to the previous one) and creates it when it is
// missing, as Docker does.
func (st *stageState) workdir(ctx context.Context, c *instructions.WorkdirCommand, text string) error {
	dir := c.Path
	if !path.IsAbs(dir) {
		dir = path.Join(st.currentDir(), dir)
	}
	dir = path.Clean(dir)
	st.cfg.Config.WorkingDir = dir
	st.s.out.printf("%s %s\n", st.s.cfg.Plan.Describe(st.index), text)
	return st.changeFS(ctx, text, st.stepKey(false, text), func(root string) error {
		owner := executor.Owner{}
		if u := st.cfg.Config.User; u != "" {
			o, err := executor.ResolveOwner(root, u)
			if err != nil {
				return fmt.Errorf("creating the directory for USER %s: %w", u, err)
			}
			owner = o
		}
		_, err := executor.MkdirAll(root, dir, owner, "WORKDIR")
		return err
	})
}

// env returns the variables visible to expansion and RUN: the stage's ARGs overridden by the
// image's ENV.
func (st *stageState) env() map[string]string {
	m := make(map[string]string, len(st.args)+len(st.cfg.Config.Env))
	for k, v := range st.args {
		m[k] = v
	}
	for _, kv := range st.cfg.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func (st *stageState) expander() instructions.SingleWordExpander {
	lex := st.s.cfg.Plan.Lexer()
	env := shell.EnvsFromSlice(envSlice(st.env()))
	return func(word string) (string, error) {
		v, _, err := lex.ProcessWord(word, env)
		return v, err
	}
}

// runEnv is the environment of a RUN: image ENV, plus ARGs and proxy build args that ENV does
// not override, plus a default PATH.
func (st *stageState) runEnv() []string {
	env := append([]string{}, st.cfg.Config.Env...)
	has := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		has[k] = true
	}
	extra := map[string]string{}
	for k, v := range st.args {
		extra[k] = v
	}
	for k, v := range st.s.cfg.BuildArgs {
		if isProxyArg(k) {
			extra[k] = v
		}
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !has[k] {
			env = append(env, k+"="+extra[k])
			has[k] = true
		}
	}
	if !has["PATH"] {
		env = append(env, defaultPath)
	}
	return env
}

func setEnv(env []string, key, value string) []string {
	for i, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			env[i] = key + "=" + value
			return env
		}
	}
	return append(env, key+"="+value)
}

func envSlice(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
