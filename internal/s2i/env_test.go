package s2i

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	in := `# a comment
// another comment

APP_MODE=prod
  SPACED  =  value with spaces  
DOUBLE="quoted value"
SINGLE='it''s'
HALF="open
EMPTY=
URL=http://x/?a=b
not a pair
`
	vars, notes, err := ParseEnvFile(strings.NewReader(in), ".s2i/environment")
	if err != nil {
		t.Fatal(err)
	}
	want := []EnvVar{
		{"APP_MODE", "prod"},
		{"SPACED", "value with spaces"},
		{"DOUBLE", "quoted value"},
		{"SINGLE", "it''s"},
		{"HALF", `"open`},
		{"EMPTY", ""},
		{"URL", "http://x/?a=b"},
	}
	if !reflect.DeepEqual(vars, want) {
		t.Errorf("vars:\n got %q\nwant %q", vars, want)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], ".s2i/environment:11") {
		t.Errorf("notes = %q, want one about line 11", notes)
	}
}

func TestParseEnvFileRejectsBadNames(t *testing.T) {
	_, _, err := ParseEnvFile(strings.NewReader("OK=1\n1BAD=2\n"), "env")
	if err == nil || !strings.Contains(err.Error(), "env:2") {
		t.Fatalf("err = %v, want one naming env:2", err)
	}
}

func TestParseEnvFlag(t *testing.T) {
	if ev, err := ParseEnvFlag("A=b=c"); err != nil || ev != (EnvVar{"A", "b=c"}) {
		t.Errorf("A=b=c: %v %v", ev, err)
	}
	for _, bad := range []string{"NOEQUALS", "=v", "A B=c"} {
		if _, err := ParseEnvFlag(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := NewEnvVar("A", "two\nlines"); err == nil {
		t.Error("a value with a line break was accepted")
	}
}

func TestMergeEnvLaterWinsFirstPositionKept(t *testing.T) {
	got := mergeEnv(
		[]EnvVar{{"A", "source"}, {"B", "source"}},
		[]EnvVar{{"C", "file"}, {"A", "file"}},
		[]EnvVar{{"A", "flag"}},
	)
	want := []EnvVar{{"A", "flag"}, {"B", "source"}, {"C", "file"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
