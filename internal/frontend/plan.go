// Package frontend turns a Dockerfile into a Plan: the stages of the build, their instructions
// (BuildKit's typed instructions, so the grammar is exactly Docker's) and the dependencies
// between stages. It is pure: it reads only the Dockerfile it is given and never touches images,
// files or the network. Variable expansion that needs an image's environment happens later, in
// the solver; the frontend expands only what Docker expands before any image is known (FROM and
// the stage names used by --from).
package frontend

import (
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Plan is an immutable description of a build: every stage of the Dockerfile with its
// instructions, and which of them the target needs.
type Plan struct {
	// File names the Dockerfile for error messages ("Dockerfile", "build/Containerfile", "-").
	File string
	// Escape is the Dockerfile's escape token (\ or `).
	Escape rune
	// Args holds the values of the global (pre-FROM) ARGs after --build-arg overrides, plus the
	// predefined platform args. Stages may re-declare them to see them.
	Args map[string]string
	// Stages lists every stage in Dockerfile order.
	Stages []*Stage
	// Target is the index of the stage whose image is the result.
	Target int
	// UnusedBuildArgs lists --build-arg names that no ARG in the needed stages declares.
	UnusedBuildArgs []string
}

// Stage is one FROM section.
type Stage struct {
	Index int
	// Name is the lowercased `AS name`, or "".
	Name string
	// Base is the expanded FROM argument: "scratch", an image reference, or the name of an
	// earlier stage (BaseStage is then its index).
	Base      string
	BaseStage int // -1 when Base is not a stage
	// Platform is the expanded --platform of FROM, or "".
	Platform string
	// Line is the Dockerfile line of the FROM instruction.
	Line int
	// Commands are the stage's instructions in order.
	Commands []instructions.Command
	// Deps are the indexes of the stages this stage reads from: its base stage, COPY --from
	// and RUN --mount from= stages. Sorted, unique.
	Deps []int
	// SourceImages are image references read by COPY --from or RUN --mount from= that are not
	// stages of this Dockerfile.
	SourceImages []string
}

// Needed returns the indexes of the stages the target depends on, the target last, each stage
// after the stages it depends on. Stages the target does not need are not listed.
func (p *Plan) Needed() []int {
	seen := make(map[int]bool)
	var order []int
	var visit func(i int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		for _, d := range p.Stages[i].Deps {
			visit(d)
		}
		order = append(order, i)
	}
	visit(p.Target)
	return order
}

// StageByName finds a stage by its name or by its index written as a number, as --from and
// FROM accept them. Only stages before `before` are considered (a stage can read only from
// earlier stages).
func (p *Plan) StageByName(name string, before int) (int, bool) {
	for i := 0; i < before && i < len(p.Stages); i++ {
		if p.Stages[i].Name != "" && strings.EqualFold(p.Stages[i].Name, name) {
			return i, true
		}
	}
	var n int
	if _, err := fmt.Sscanf(name, "%d", &n); err == nil && fmt.Sprint(n) == name && n >= 0 && n < before {
		return n, true
	}
	return -1, false
}

// Describe renders a stage for progress lines: "[stage 2/3 builder]".
func (p *Plan) Describe(i int) string {
	s := p.Stages[i]
	if s.Name != "" {
		return fmt.Sprintf("[stage %d/%d %s]", i+1, len(p.Stages), s.Name)
	}
	return fmt.Sprintf("[stage %d/%d]", i+1, len(p.Stages))
}

// Lexer returns a shell word lexer with the Dockerfile's escape token, for expanding
// instruction arguments.
func (p *Plan) Lexer() *shell.Lex {
	return shell.NewLex(p.Escape)
}

// ExpandGlobal expands a word with the global ARGs, as Docker expands FROM and --from.
func (p *Plan) ExpandGlobal(word string) (string, error) {
	v, _, err := p.Lexer().ProcessWord(word, mapEnv(p.Args))
	return v, err
}
