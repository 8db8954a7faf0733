package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/kiln-build/kiln/internal/sandbox"
)

// RunError is a RUN step that failed: its exit code and the last lines of its output.
type RunError struct {
	Code   int
	Signal string
	Tail   []string
}

func (e *RunError) Error() string {
	how := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != "" {
		how = "killed by " + e.Signal
	}
	return "the command failed with " + how
}

// tailLines keeps the last n lines written to it.
type tailLines struct {
	mu    sync.Mutex
	n     int
	lines []string
	part  strings.Builder
}

func (t *tailLines) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range p {
		if b != '\n' {
			t.part.WriteByte(b)
			continue
		}
		t.lines = append(t.lines, t.part.String())
		t.part.Reset()
		if len(t.lines) > t.n {
			t.lines = t.lines[len(t.lines)-t.n:]
		}
	}
	return len(p), nil
}

func (t *tailLines) get() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.lines...)
	if t.part.Len() > 0 {
		out = append(out, t.part.String())
	}
	return out
}

// Run runs a RUN step's process in the sandbox with its output streamed to out. A failing
// process gives a *RunError with the last lines of output.
func Run(ctx context.Context, spec sandbox.Spec, out io.Writer) error {
	tail := &tailLines{n: 10}
	w := io.MultiWriter(out, tail)
	spec.Stdout, spec.Stderr = w, w
	err := sandbox.Run(ctx, spec)
	var ee *sandbox.ExitError
	if errors.As(err, &ee) {
		return &RunError{Code: ee.Code, Signal: ee.Signal, Tail: tail.get()}
	}
	return err
}
