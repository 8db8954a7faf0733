package s2i

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
)

// EnvVar is one environment variable of the build: assemble sees it, and the output image
// carries it as ENV.
type EnvVar struct {
	Name, Value string
}

// envName is what kiln accepts as a variable name: what a shell can use, plus the dots and
// dashes some Java images put in their variables.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// ParseEnvFile reads KEY=VALUE lines as s2i reads .s2i/environment and --environment-file:
// blank lines and lines starting with # or // are skipped, spaces around the key and the value
// are trimmed, and a value wrapped in matching single or double quotes loses them. Lines
// without "=" are skipped as s2i skips them; each one is reported in the returned notes.
// name labels errors and notes.
func ParseEnvFile(r io.Reader, name string) ([]EnvVar, []string, error) {
	var vars []EnvVar
	var notes []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "//") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			notes = append(notes, fmt.Sprintf("%s:%d: ignoring %q: not KEY=VALUE", name, n, line))
			continue
		}
		ev, err := NewEnvVar(strings.TrimSpace(k), unquote(strings.TrimSpace(v)))
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		vars = append(vars, ev)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return vars, notes, nil
}

// ReadEnvFile is ParseEnvFile on the file at path.
func ReadEnvFile(path string) ([]EnvVar, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the environment file: %w", err)
	}
	defer f.Close()
	return ParseEnvFile(f, path)
}

// readSourceEnv reads .s2i/environment under root, if there is one.
func readSourceEnv(root string) ([]EnvVar, []string, error) {
	vars, notes, err := ReadEnvFile(joinRel(root, sourceEnvFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	return vars, notes, err
}

// NewEnvVar checks a variable: its name must be usable in ENV, and its value must fit on one
// Dockerfile line.
func NewEnvVar(name, value string) (EnvVar, error) {
	if !envName.MatchString(name) {
		return EnvVar{}, fmt.Errorf("environment variable %q: the name must be letters, digits, _, . and - and start with a letter or _", name)
	}
	if strings.ContainsAny(value, "\n\r\x00") {
		return EnvVar{}, fmt.Errorf("environment variable %s: the value must be a single line", name)
	}
	return EnvVar{Name: name, Value: value}, nil
}

// ParseEnvFlag parses one --env value, KEY=VALUE.
func ParseEnvFlag(s string) (EnvVar, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return EnvVar{}, fmt.Errorf("--env %q: use KEY=VALUE", s)
	}
	ev, err := NewEnvVar(k, v)
	if err != nil {
		return EnvVar{}, fmt.Errorf("--env: %w", err)
	}
	return ev, nil
}

// unquote strips one pair of matching single or double quotes around v.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// mergeEnv returns base overridden by each later list in turn: a name keeps the position of its
// first appearance and takes its last value.
func mergeEnv(lists ...[]EnvVar) []EnvVar {
	var out []EnvVar
	at := map[string]int{}
	for _, l := range lists {
		for _, ev := range l {
			if i, ok := at[ev.Name]; ok {
				out[i].Value = ev.Value
				continue
			}
			at[ev.Name] = len(out)
			out = append(out, ev)
		}
	}
	return out
}
