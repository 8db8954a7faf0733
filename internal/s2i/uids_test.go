package s2i

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

func TestParseUIDRanges(t *testing.T) {
	for _, tc := range []struct {
		in, shown string
		in1, out1 uint32
	}{
		{"1-", "1-", 1001, 0},
		{"1000-2000, 0", "1000-2000,0", 0, 2001},
		{"1001", "1001", 1001, 1002},
	} {
		rs, err := ParseUIDRanges(tc.in)
		if err != nil {
			t.Fatalf("ParseUIDRanges(%q): %v", tc.in, err)
		}
		if rs.String() != tc.shown || !rs.contains(tc.in1) || rs.contains(tc.out1) {
			t.Errorf("ParseUIDRanges(%q) = %s: contains(%d)=%v contains(%d)=%v", tc.in, rs, tc.in1, rs.contains(tc.in1), tc.out1, rs.contains(tc.out1))
		}
	}
	for _, bad := range []string{"", "a", "5-3", "-5", "1-x", "1,,2"} {
		if _, err := ParseUIDRanges(bad); err == nil || !strings.Contains(err.Error(), "--allowed-uids") {
			t.Errorf("ParseUIDRanges(%q) = %v, want an error naming --allowed-uids", bad, err)
		}
	}
}

func TestAssembleUserRules(t *testing.T) {
	nonRoot, err := ParseUIDRanges("1-")
	if err != nil {
		t.Fatal(err)
	}
	// No USER and no label: assemble runs as 1001, with a note, and 1- allows it.
	g := generate(t, Options{Builder: imageBuilder("", nil), SourceDir: source(t), AllowedUIDs: nonRoot})
	if got := users(t, g, 0); !reflect.DeepEqual(got, []string{DefaultAssembleUser, "root"}) || len(g.plan.Notes) == 0 || !strings.Contains(g.plan.Notes[0], "not root") {
		t.Errorf("USER = %q, notes %q; want assemble as %s, then root back, and a note", got, g.plan.Notes, DefaultAssembleUser)
	}
	// A builder that says root gets root, unless --allowed-uids refuses it.
	if got := users(t, generate(t, Options{Builder: imageBuilder("root", nil), SourceDir: source(t)}), 0); len(got) != 0 {
		t.Errorf("USER root builder: USER = %q, want none", got)
	}
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"root USER", Options{Builder: imageBuilder("root", nil)}, "is uid 0 (root), outside --allowed-uids 1-"},
		{"root label", Options{Builder: imageBuilder("1001", map[string]string{LabelAssembleUser: "0:0"})}, "is uid 0 (root), outside"},
		{"named user", Options{Builder: imageBuilder("app", nil)}, `is "app", not a numeric uid`},
		{"--assemble-user root", Options{Builder: imageBuilder("1001", nil), AssembleUser: "root"}, "outside --allowed-uids"},
		{"root runtime", Options{Builder: imageBuilder("1001", nil), Runtime: image("localhost:5000/rt:1", "", map[string]string{LabelScriptsURL: "image:///s"}),
			RuntimeArtifacts: []Mapping{{"/opt/app", ""}}}, "the USER of runtime image localhost:5000/rt:1 is uid 0 (root)"},
	} {
		tc.opts.SourceDir, tc.opts.AllowedUIDs = source(t), nonRoot
		_, err := Generate(context.Background(), tc.opts, t.TempDir(), "Dockerfile")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
