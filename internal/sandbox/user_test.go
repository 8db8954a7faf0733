package sandbox

import (
	"reflect"
	"strings"
	"testing"
)

func TestResolveUser(t *testing.T) {
	passwd, err := parsePasswd(strings.NewReader(testPasswd + "broken line\nbad:x:no:1::/:\n"))
	if err != nil {
		t.Fatal(err)
	}
	groups, err := parseGroup(strings.NewReader(testGroup))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec    string
		want    execUser
		wantErr string
	}{
		{"", execUser{0, 0, []int{0}, "/root"}, ""},
		{"root", execUser{0, 0, []int{0}, "/root"}, ""},
		{"alice", execUser{1000, 1000, []int{1000, 2000, 3000}, "/home/alice"}, ""},
		{"1000", execUser{1000, 1000, []int{1000, 2000, 3000}, "/home/alice"}, ""},
		{"alice:devs", execUser{1000, 2000, []int{2000, 3000}, "/home/alice"}, ""},
		{"1001:3000", execUser{1001, 3000, []int{3000, 2000}, "/home/bob"}, ""},
		{"4242", execUser{4242, 0, []int{0}, "/"}, ""},
		{"4242:4343", execUser{4242, 4343, []int{4343}, "/"}, ""},
		{"nobody", execUser{}, `resolving user "nobody"`},
		{"alice:nogroup", execUser{}, `resolving group "nogroup"`},
		{"-1", execUser{}, `resolving user "-1"`},
	}
	for _, tc := range tests {
		got, err := resolveUser(tc.spec, passwd, groups)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("resolveUser(%q) error = %v, want %q", tc.spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("resolveUser(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	env := []string{"PATH=/usr/bin:/bin"}
	if p, err := lookPath("sh", env); err != nil || !strings.HasSuffix(p, "/sh") {
		t.Errorf("lookPath(sh) = %q, %v", p, err)
	}
	if p, _ := lookPath("./x", env); p != "./x" {
		t.Errorf("lookPath(./x) = %q, want it unchanged", p)
	}
	if _, err := lookPath("no-such-command-kiln", env); err == nil {
		t.Errorf("lookPath of a missing command succeeded")
	}
}
