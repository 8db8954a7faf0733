package frontend

import (
	"reflect"
	"strings"
	"testing"
)

func parse(t *testing.T, df string, opts Options) (*Plan, error) {
	t.Helper()
	if opts.Platform == "" {
		opts.Platform, opts.BuildPlatform = "linux/amd64", "linux/amd64"
	}
	return Parse(strings.NewReader(df), opts)
}

func TestParseStagesAndNeeded(t *testing.T) {
	df := `ARG BASE=busybox
ARG TAG
FROM ${BASE}:${TAG:-latest} AS base
RUN echo base
FROM base AS builder
RUN echo build
FROM scratch AS unused
COPY --from=builder /x /x
FROM localhost:5000/other AS final
COPY --from=builder /out /out
COPY --from=0 /etc /etc
COPY --from=localhost:5000/tools:1 /bin/tool /tool
`
	p, err := parse(t, df, Options{BuildArgs: map[string]string{"TAG": "1.36", "UNUSED": "x", "HTTP_PROXY": "p"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Stages[0].Base; got != "busybox:1.36" {
		t.Errorf("FROM expansion = %q", got)
	}
	if p.Stages[1].BaseStage != 0 {
		t.Errorf("stage 1 base stage = %d", p.Stages[1].BaseStage)
	}
	if got := p.Needed(); !reflect.DeepEqual(got, []int{0, 1, 3}) {
		t.Errorf("Needed = %v, want [0 1 3] (stage 2 is unused)", got)
	}
	if got := p.Stages[3].SourceImages; !reflect.DeepEqual(got, []string{"localhost:5000/tools:1"}) {
		t.Errorf("SourceImages = %v", got)
	}
	if !reflect.DeepEqual(p.UnusedBuildArgs, []string{"UNUSED"}) {
		t.Errorf("UnusedBuildArgs = %v", p.UnusedBuildArgs)
	}
	if p.Args["TARGETARCH"] != "amd64" || p.Args["BUILDOS"] != "linux" {
		t.Errorf("predefined args missing: %v", p.Args)
	}
}

func TestParseTarget(t *testing.T) {
	df := "FROM scratch AS a\nFROM scratch AS b\nCOPY --from=a / /\nFROM scratch AS c\n"
	p, err := parse(t, df, Options{Target: "B"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Target != 1 || !reflect.DeepEqual(p.Needed(), []int{0, 1}) {
		t.Errorf("target=%d needed=%v", p.Target, p.Needed())
	}
}

func TestParseErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, df, target, want string
	}{
		{"unknown instruction", "FROM scratch\nFOO bar\n", "", "Dockerfile.test:2: unknown instruction: FOO"},
		{"run without args", "FROM scratch\n\nRUN\n", "", "Dockerfile.test:3: RUN requires a command"},
		{"no from", "RUN true\n", "", "Dockerfile.test:1: "},
		{"empty", "\n# only a comment\n", "", "no instructions"},
		{"undefined FROM arg", "FROM $NOPE\n", "", "Dockerfile.test:1: FROM $NOPE: the base image name is empty"},
		{"copy from later stage", "FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\n", "", "Dockerfile.test:2: --from=b refers to this or a later stage"},
		{"copy from missing index", "FROM scratch\nCOPY --from=3 / /\n", "", "Dockerfile.test:2: --from=3: there is no stage 3"},
		{"missing target", "FROM scratch AS a\n", "zzz", `target stage "zzz" not found`},
		{"bad flag", "FROM scratch\nCOPY --bogus=1 a b\n", "", "Dockerfile.test:2: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.df, Options{File: "Dockerfile.test", Target: tc.target})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestParseTriggers(t *testing.T) {
	cmds, err := ParseTriggers("Dockerfile", []string{"RUN echo hi", "COPY a /b"})
	if err != nil || len(cmds) != 2 || !strings.EqualFold(cmds[0].Name(), "run") || !strings.EqualFold(cmds[1].Name(), "copy") {
		t.Fatalf("ParseTriggers = %v, %v", cmds, err)
	}
}

func TestParseDuplicateStage(t *testing.T) {
	_, err := parse(t, "FROM scratch AS a\nFROM scratch AS A\n", Options{})
	if err == nil || !strings.Contains(err.Error(), `Dockerfile:2: duplicate stage name "a"`) {
		t.Fatalf("error = %v", err)
	}
}
