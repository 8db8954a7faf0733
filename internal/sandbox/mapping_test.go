package sandbox

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseIDMap(t *testing.T) {
	tests := []struct {
		in      string
		want    []IDRange
		wantErr bool
	}{
		{in: "         0          0 4294967295\n", want: []IDRange{{0, 0, 4294967295}}},
		{in: "0 1000 1\n1 100000 65536\n", want: []IDRange{{0, 1000, 1}, {1, 100000, 65536}}},
		{in: "", want: nil},
		{in: "0 1000\n", wantErr: true},
		{in: "0 x 1\n", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseIDMap(strings.NewReader(tc.in))
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseIDMap(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseSubIDs(t *testing.T) {
	const file = "# comment\nalice:100000:65536\n1001:200000:1000\nbob:300000:65536\nalice:400000:10\n"
	tests := []struct {
		name string
		id   int
		want []subIDRange
	}{
		{"alice", 1000, []subIDRange{{100000, 65536}, {400000, 10}}},
		{"carol", 1001, []subIDRange{{200000, 1000}}}, // by uid
		{"dave", 1002, nil},
	}
	for _, tc := range tests {
		got, err := parseSubIDs(strings.NewReader(file), tc.name, tc.id)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSubIDs(%s) = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := parseSubIDs(strings.NewReader("alice:x:1\n"), "alice", 1000); err == nil {
		t.Errorf("malformed line accepted")
	}
}

func TestSubordinateMapping(t *testing.T) {
	got := subordinateMapping(1000, []subIDRange{{100000, 65536}, {400000, 10}})
	want := []IDRange{{0, 1000, 1}, {1, 100000, 65536}, {65537, 400000, 10}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if n := (Mapping{UIDs: got}).Size(); n != 65547 {
		t.Errorf("Size = %d, want 65547", n)
	}
}

func TestNoSyncFilterJumps(t *testing.T) {
	prog, err := noSyncFilter()
	if err != nil {
		t.Skip(err.Error() + ": NoSync is only built for amd64 and arm64")
	}
	for pc, ins := range prog {
		if ins.Code&0x07 == 0x05 { // BPF_JMP
			for _, off := range []uint8{ins.Jt, ins.Jf} {
				if pc+1+int(off) >= len(prog) {
					t.Errorf("instruction %d jumps past the end", pc)
				}
			}
		}
	}
	if last := prog[len(prog)-1]; last.Code != 0x06 {
		t.Errorf("program does not end with a return")
	}
}
