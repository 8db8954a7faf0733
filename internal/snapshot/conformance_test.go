package snapshot

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/archive"
)

// conformanceCase builds a base layer, changes a snapshot over it, and checks the result
// seen through the committed dest and through the committed tar.
type conformanceCase struct {
	name    string
	base    func(f fsT) // content of the base layer
	change  func(f fsT) // what the "step" does in a snapshot over the base
	want    func(f fsT) // checks a root made of base + the committed change
	inTar   []string    // names the layer must hold
	notTar  []string    // names it must not hold (unchanged files)
	needIDs bool        // needs owners other than 0 (skipped with a single id mapped)
}

func conformanceCases() []conformanceCase {
	return []conformanceCase{
		{name: "add file", base: func(f fsT) { f.write("etc/keep", "k", 0o644) },
			change: func(f fsT) { f.write("etc/new", "n", 0o640) },
			want: func(f fsT) {
				f.content("etc/new", "n")
				f.content("etc/keep", "k")
				f.mode("etc/new", unix.S_IFREG|0o640)
			},
			inTar: []string{"etc/", "etc/new"}, notTar: []string{"etc/keep"}},
		{name: "modify file", base: func(f fsT) { f.write("f", "old", 0o644); f.write("keep", "k", 0o644) },
			change: func(f fsT) { f.write("f", "new content", 0o644) },
			want:   func(f fsT) { f.content("f", "new content"); f.content("keep", "k") },
			inTar:  []string{"f"}, notTar: []string{"keep"}},
		{name: "delete file", base: func(f fsT) { f.write("d/f", "x", 0o644); f.write("d/keep", "k", 0o644) },
			change: func(f fsT) { f.rm("d/f") },
			want:   func(f fsT) { f.absent("d/f"); f.content("d/keep", "k") },
			inTar:  []string{"d/.wh.f"}},
		{name: "delete dir", base: func(f fsT) { f.write("d/x", "x", 0o644); f.write("d/y/z", "z", 0o644) },
			change: func(f fsT) { f.rm("d") },
			want:   func(f fsT) { f.absent("d"); f.names("") },
			inTar:  []string{".wh.d"}},
		{name: "dir replaced by file", base: func(f fsT) { f.write("d/x", "x", 0o644) },
			change: func(f fsT) { f.rm("d"); f.write("d", "file", 0o600) },
			want:   func(f fsT) { f.content("d", "file") }},
		{name: "file replaced by dir", base: func(f fsT) { f.write("f", "x", 0o644) },
			change: func(f fsT) { f.rm("f"); f.write("f/inner", "in", 0o644) },
			want:   func(f fsT) { f.content("f/inner", "in"); f.names("f", "inner") }},
		{name: "file replaced by symlink", base: func(f fsT) { f.write("f", "x", 0o644); f.write("target", "t", 0o644) },
			change: func(f fsT) { f.rm("f"); f.symlink("target", "f") },
			want:   func(f fsT) { f.link("f", "target"); f.content("f", "t") }},
		{name: "opaque dir", base: func(f fsT) { f.write("d/a", "a", 0o644); f.write("d/b/c", "c", 0o644) },
			change: func(f fsT) { f.rm("d"); f.mkdir("d"); f.write("d/new", "n", 0o644) },
			want:   func(f fsT) { f.names("d", "new"); f.content("d/new", "n") }},
		{name: "chmod only", base: func(f fsT) { f.write("f", "x", 0o644); f.mkdir("d") },
			change: func(f fsT) { f.must(os.Chmod(f.p("f"), 0o600)); f.must(os.Chmod(f.p("d"), 0o700)) },
			want:   func(f fsT) { f.mode("f", unix.S_IFREG|0o600); f.mode("d", unix.S_IFDIR|0o700); f.content("f", "x") },
			inTar:  []string{"f", "d/"}},
		{name: "chown only", needIDs: true, base: func(f fsT) { f.write("f", "x", 0o644) },
			change: func(f fsT) { f.must(os.Lchown(f.p("f"), 1000, 1001)) },
			want: func(f fsT) {
				if st := f.lstat("f"); st.Uid != 1000 || st.Gid != 1001 {
					f.t.Errorf("f owned by %d:%d, want 1000:1001", st.Uid, st.Gid)
				}
			},
			inTar: []string{"f"}},
		{name: "hard links", base: func(f fsT) { f.write("a", "shared", 0o644); f.must(os.Link(f.p("a"), f.p("b"))) },
			change: func(f fsT) { f.write("n1", "new", 0o644); f.must(os.Link(f.p("n1"), f.p("n2"))) },
			want: func(f fsT) {
				if f.lstat("n1").Ino != f.lstat("n2").Ino || f.lstat("a").Ino != f.lstat("b").Ino {
					f.t.Error("hard links not kept")
				}
				f.content("n2", "new")
			},
			inTar: []string{"n1", "n2"}, notTar: []string{"a", "b"}},
		{name: "xattrs", base: func(f fsT) { f.write("f", "x", 0o644) },
			change: func(f fsT) {
				f.must(unix.Setxattr(f.p("f"), "user.kiln", []byte("changed"), 0))
				f.write("g", "g", 0o644)
				f.must(unix.Setxattr(f.p("g"), "user.kiln", []byte("new"), 0))
				// File capabilities need CAP_SETFCAP over the file, which uid 0 has here.
				f.write("ping", "p", 0o755)
				f.must(unix.Setxattr(f.p("ping"), "security.capability", []byte(capNetRaw), 0))
			},
			want: func(f fsT) {
				wantXattr(f, "f", "user.kiln", "changed")
				wantXattr(f, "g", "user.kiln", "new")
				wantXattr(f, "ping", "security.capability", capNetRaw)
			},
			inTar: []string{"f", "g"}},
		{name: "symlinks", base: func(f fsT) { f.mkdir("bin") },
			change: func(f fsT) {
				f.symlink("/no/such/file", "bin/dangling")
				f.symlink("/etc/passwd", "bin/abs")
				f.symlink("../bin", "bin/rel")
			},
			want: func(f fsT) {
				f.link("bin/dangling", "/no/such/file")
				f.link("bin/abs", "/etc/passwd")
				f.link("bin/rel", "../bin")
			}},
		{name: "setuid bits", base: func(f fsT) { f.write("bin/su", "su", 0o755) },
			change: func(f fsT) {
				f.must(unix.Chmod(f.p("bin/su"), 0o4755))
				f.write("bin/new", "n", 0o755)
				f.must(unix.Chmod(f.p("bin/new"), 0o2711))
				f.mkdir("tmp")
				f.must(unix.Chmod(f.p("tmp"), 0o1777))
			},
			want: func(f fsT) {
				f.mode("bin/su", unix.S_IFREG|0o4755)
				f.mode("bin/new", unix.S_IFREG|0o2711)
				f.mode("tmp", unix.S_IFDIR|0o1777)
			}},
	}
}

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting cap_net_raw (bit 13).
const capNetRaw = "\x00\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

func wantXattr(f fsT, rel, name, want string) {
	f.t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(f.p(rel), name, buf)
	if err != nil || string(buf[:n]) != want {
		f.t.Errorf("%s: xattr %s = %q, %v; want %q", rel, name, buf[:max(n, 0)], err, want)
	}
}

func TestConformance(t *testing.T) {
	chown := canChown(t)
	for _, d := range drivers() {
		for _, tc := range conformanceCases() {
			t.Run(d.name+"/"+tc.name, func(t *testing.T) {
				if tc.needIDs && !chown {
					t.Skip("needs more than one id mapped: run as root or as a user with /etc/subuid and /etc/subgid ranges")
				}
				runCase(t, d.new, tc)
			})
		}
	}
}

func runCase(t *testing.T, newS func(string) (Snapshotter, error), tc conformanceCase) {
	ctx := context.Background()
	store := t.TempDir()
	s, err := newS(filepath.Join(store, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(store, "layers", "base")
	diff := filepath.Join(store, "layers", "diff")
	must(t, os.MkdirAll(filepath.Dir(base), 0o755))

	a, err := s.Prepare(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc.base(fsT{t, a.Root()})
	commit(t, a, base)

	a, err = s.Prepare(ctx, []string{base})
	if err != nil {
		t.Fatal(err)
	}
	tc.change(fsT{t, a.Root()})
	raw, hdrs := commit(t, a, diff)
	for _, n := range tc.inTar {
		if hdrs[n] == nil {
			t.Errorf("layer lacks %s; it holds %v", n, sortedNames(hdrs))
		}
	}
	for _, n := range tc.notTar {
		if hdrs[n] != nil {
			t.Errorf("layer holds unchanged %s", n)
		}
	}

	// The layer tar, unpacked the way the store unpacks pulled layers, and the committed diff
	// dir both serve as lowers, for this snapshotter and the other one alike.
	fromTar := filepath.Join(store, "layers", "fromtar")
	must(t, os.Mkdir(fromTar, 0o755))
	must(t, archive.Extract(ctx, bytes.NewReader(raw), fromTar, archive.ExtractOptions{}))
	for _, d := range drivers() {
		viewer, err := d.new(filepath.Join(store, "view-"+d.name))
		must(t, err)
		for _, top := range []string{diff, fromTar} {
			t.Run("view/"+d.name+"/"+filepath.Base(top), func(t *testing.T) {
				checkStack(t, viewer, []string{base, top}, tc.want)
			})
		}
	}
}

func checkStack(t *testing.T, s Snapshotter, lowers []string, want func(fsT)) {
	t.Helper()
	a, err := s.Prepare(context.Background(), lowers)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	want(fsT{t, a.Root()})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
