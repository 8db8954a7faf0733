package frontend

import (
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// ParseTriggers parses the ONBUILD triggers recorded in a base image's config, as Docker runs
// them at the start of a stage that uses the image as its base.
func ParseTriggers(file string, triggers []string) ([]instructions.Command, error) {
	var cmds []instructions.Command
	for _, t := range triggers {
		res, err := parser.Parse(strings.NewReader(t + "\n"))
		if err != nil {
			return nil, &Error{File: file, Err: fmt.Errorf("parsing ONBUILD trigger %q of the base image: %v", t, err)}
		}
		for _, n := range res.AST.Children {
			cmd, err := instructions.ParseCommand(n)
			if err != nil {
				return nil, &Error{File: file, Err: fmt.Errorf("parsing ONBUILD trigger %q of the base image: %v", t, err)}
			}
			cmds = append(cmds, cmd)
		}
	}
	return cmds, nil
}
