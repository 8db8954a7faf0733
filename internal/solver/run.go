package solver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/kiln-build/kiln/internal/executor"
	"github.com/kiln-build/kiln/internal/frontend"
	"github.com/kiln-build/kiln/internal/sandbox"
)

// heredocDir is where a RUN heredoc with a shebang is mounted as an executable script.
const heredocDir = "/dev/pipes"

// run executes a RUN instruction in the sandbox on a snapshot and commits its changes.
func (st *stageState) run(ctx context.Context, c *instructions.RunCommand, text string) error {
	args, script, err := st.runArgs(c)
	if err != nil {
		return err
	}
	mounts, secretEnv, mountKeys, release, err := st.runMounts(ctx, instructions.GetMounts(c))
	if err != nil {
		return err
	}
	defer release()
	tmp, err := st.s.cfg.Store.TempDir("run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	spec := sandbox.Spec{
		TempDir: tmp,
		Args:    args,
		Env:     append(st.runEnv(), secretEnv...),
		Mounts:  mounts,
		Dir:     st.cfg.Config.WorkingDir,
		User:    st.cfg.Config.User,
		Network: runNetwork(c, st.s.cfg.Network),
		NoSync:  st.s.cfg.NoSync,
	}
	if script != nil {
		dir, err := st.s.cfg.Store.TempDir("heredoc-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, script.Name), []byte(script.Data), 0o755); err != nil {
			return fmt.Errorf("writing the heredoc script: %w", err)
		}
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: dir, Target: heredocDir, Type: "bind", ReadOnly: true})
	}
	plan := st.s.cfg.Plan
	st.s.out.printf("%s %s\n", plan.Describe(st.index), text)
	key := st.stepKey(true, text, append([]string{heredocsKey(c), spec.Network}, mountKeys...)...)
	return st.changeFS(ctx, text, key, func(root string) error {
		spec.Rootfs = root
		start := time.Now()
		defer func() { st.s.runTime.Add(int64(time.Since(start))) }()
		return executor.Run(ctx, spec, st.s.out)
	})
}

// runArgs returns RUN's argv. A heredoc with a shebang becomes a script file (returned so the
// caller can mount it); any other heredoc becomes the shell's command string.
func (st *stageState) runArgs(c *instructions.RunCommand) ([]string, *instructions.ShellInlineFile, error) {
	if len(c.Files) == 0 {
		return st.commandLine(c.ShellDependantCmdLine), nil, nil
	}
	if len(c.CmdLine) != 1 || !c.PrependShell {
		return nil, nil, fmt.Errorf("a heredoc needs the shell form of RUN")
	}
	if hd := parser.MustParseHeredoc(c.CmdLine[0]); hd != nil {
		data := c.Files[0].Data
		if c.Files[0].Chomp {
			data = parser.ChompHeredocContent(data)
		}
		if strings.HasPrefix(data, "#!") {
			f := instructions.ShellInlineFile{Name: c.Files[0].Name, Data: data}
			return []string{heredocDir + "/" + f.Name}, &f, nil
		}
		return st.commandLine(instructions.ShellDependantCmdLine{CmdLine: []string{data}, PrependShell: true}), nil, nil
	}
	var b strings.Builder
	b.WriteString(c.CmdLine[0])
	for _, f := range c.Files {
		b.WriteString("\n" + f.Data + f.Name)
	}
	return st.commandLine(instructions.ShellDependantCmdLine{CmdLine: []string{b.String()}, PrependShell: true}), nil, nil
}

// isProxyArg reports Docker's predefined proxy args.
func isProxyArg(k string) bool { return frontend.IsProxyArg(k) }

// runNetwork is a RUN's network: its --network flag, else the build's --network.
func runNetwork(c *instructions.RunCommand, build string) string {
	switch instructions.GetNetwork(c) {
	case instructions.NetworkNone:
		return "none"
	case instructions.NetworkHost:
		return "host"
	}
	return build
}

// heredocsKey hashes a RUN's heredoc bodies, which its text does not hold.
func heredocsKey(c *instructions.RunCommand) string {
	var parts []string
	for _, f := range c.Files {
		parts = append(parts, f.Name, f.Data)
	}
	return keyOf(parts...)
}
