package executor

import (
	"archive/tar"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/patternmatcher"
)

// tree creates files under root: "dir/" makes a directory, "l -> target" a symlink, anything
// else a file whose content is its name.
func tree(t *testing.T, root string, entries ...string) {
	t.Helper()
	for _, e := range entries {
		p := filepath.Join(root, strings.SplitN(e, " -> ", 2)[0])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(e, "/"):
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.Contains(e, " -> "):
			if err := os.Symlink(strings.SplitN(e, " -> ", 2)[1], p); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func exists(t *testing.T, root string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s missing: %v", p, err)
		}
	}
}

func absent(t *testing.T, root string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s exists, want absent", p)
		}
	}
}

func owner(t *testing.T, p string) (int, int) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs uid 0 (root, or root of a user namespace) to set owners; run as root or under `unshare --user --map-root-user`")
	}
}

func TestCopySemantics(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	src := t.TempDir()
	tree(t, src, "a.txt", "b.txt", "c.md", "dir/x", "dir/sub/y", "link -> a.txt", "dangling -> nowhere", "out -> /etc/passwd")
	if err := os.Chown(filepath.Join(src, "a.txt"), 1234, 1234); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		spec    CopySpec
		present []string
		missing []string
		err     string
	}{
		{name: "file to path", spec: CopySpec{Sources: []string{"a.txt"}, Dest: "/x/y"}, present: []string{"x/y"}},
		{name: "file into dir/", spec: CopySpec{Sources: []string{"a.txt"}, Dest: "/opt", DestIsDir: true}, present: []string{"opt/a.txt"}},
		{name: "dir contents", spec: CopySpec{Sources: []string{"dir"}, Dest: "/d"}, present: []string{"d/x", "d/sub/y"}, missing: []string{"d/dir"}},
		{name: "wildcard", spec: CopySpec{Sources: []string{"*.txt"}, Dest: "/w/", DestIsDir: true}, present: []string{"w/a.txt", "w/b.txt"}, missing: []string{"w/c.md"}},
		{name: "several sources need a dir", spec: CopySpec{Sources: []string{"a.txt", "b.txt"}, Dest: "/f"}, err: "destination directory ending in /"},
		{name: "missing source", spec: CopySpec{Sources: []string{"nope"}, Dest: "/n"}, err: "no such file or directory in the build context"},
		{name: "escaping source", spec: CopySpec{Sources: []string{"../etc"}, Dest: "/n"}, err: "forbidden path outside the build context"},
		{name: "pattern matching nothing", spec: CopySpec{Sources: []string{"*.go"}, Dest: "/n/", DestIsDir: true}, err: "matched nothing"},
		{name: "symlink source followed inside the context", spec: CopySpec{Sources: []string{"link"}, Dest: "/l"}, present: []string{"l"}},
		{name: "symlink to outside resolves inside the context", spec: CopySpec{Sources: []string{"out"}, Dest: "/o"}, err: "no such file"},
		{name: "heredoc content", spec: CopySpec{Contents: []Content{{Name: "f", Data: "hi"}}, Dest: "/h/", DestIsDir: true}, present: []string{"h/f"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := t.TempDir()
			tc.spec.SrcRoot, tc.spec.FromContext = src, true
			err := Copy(ctx, rootfs, tc.spec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			exists(t, rootfs, tc.present...)
			absent(t, rootfs, tc.missing...)
		})
	}
	t.Run("context owners become root", func(t *testing.T) {
		rootfs := t.TempDir()
		if err := Copy(ctx, rootfs, CopySpec{SrcRoot: src, FromContext: true, Sources: []string{"a.txt"}, Dest: "/a"}); err != nil {
			t.Fatal(err)
		}
		if u, g := owner(t, filepath.Join(rootfs, "a")); u != 0 || g != 0 {
			t.Errorf("owner %d:%d, want 0:0", u, g)
		}
	})
	t.Run("dangling symlinks inside directories are copied as links", func(t *testing.T) {
		rootfs := t.TempDir()
		if err := Copy(ctx, rootfs, CopySpec{SrcRoot: src, FromContext: true, Sources: []string{"."}, Dest: "/"}); err != nil {
			t.Fatal(err)
		}
		if target, err := os.Readlink(filepath.Join(rootfs, "dangling")); err != nil || target != "nowhere" {
			t.Errorf("dangling link = %q, %v", target, err)
		}
		if target, err := os.Readlink(filepath.Join(rootfs, "out")); err != nil || target != "/etc/passwd" {
			t.Errorf("absolute link = %q, %v", target, err)
		}
	})
}

func TestCopyChownCreatesParentsWithOwner(t *testing.T) {
	requireRoot(t)
	src, rootfs := t.TempDir(), t.TempDir()
	tree(t, src, "f")
	tree(t, rootfs, "etc/passwd")
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\napp:x:1001:\nstaff:x:50:\n"), 0o644)
	for _, tc := range []struct {
		chown    string
		uid, gid int
	}{{"app", 1000, 1001}, {"app:staff", 1000, 50}, {"7", 7, 7}, {"7:8", 7, 8}} {
		o, err := ResolveOwner(rootfs, tc.chown)
		if err != nil || o.UID != tc.uid || o.GID != tc.gid {
			t.Fatalf("ResolveOwner(%q) = %+v, %v", tc.chown, o, err)
		}
	}
	if _, err := ResolveOwner(rootfs, "ghost"); err == nil || !strings.Contains(err.Error(), `no "ghost" in /etc/passwd`) {
		t.Fatalf("unknown user error = %v", err)
	}
	o := Owner{UID: 1000, GID: 1001}
	mode := fs.FileMode(0o700)
	if err := Copy(context.Background(), rootfs, CopySpec{SrcRoot: src, FromContext: true, Sources: []string{"f"}, Dest: "/new/deep/f", Chown: &o, Chmod: &mode}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"new", "new/deep", "new/deep/f"} {
		if u, g := owner(t, filepath.Join(rootfs, p)); u != 1000 || g != 1001 {
			t.Errorf("%s owned by %d:%d, want 1000:1001", p, u, g)
		}
	}
	if fi, _ := os.Stat(filepath.Join(rootfs, "new/deep/f")); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode())
	}
}

func TestCopyNeverWritesOutsideRootfs(t *testing.T) {
	requireRoot(t)
	src, rootfs, outside := t.TempDir(), t.TempDir(), t.TempDir()
	tree(t, src, "payload")
	// The rootfs holds links that point outside it, as a hostile base image could.
	tree(t, rootfs, "usr/local -> "+outside, "abs -> /", "rel -> ../../../../..")
	for _, dest := range []string{"/usr/local/payload", "/abs" + outside + "/p2", "/rel" + outside + "/p3"} {
		if err := Copy(context.Background(), rootfs, CopySpec{SrcRoot: src, FromContext: true, Sources: []string{"payload"}, Dest: dest}); err != nil {
			t.Fatalf("COPY to %s: %v", dest, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("COPY wrote outside the rootfs: %v", entries)
	}
}

func TestCopyFromStageKeepsOwnersModesAndHardLinks(t *testing.T) {
	requireRoot(t)
	src, rootfs := t.TempDir(), t.TempDir()
	tree(t, src, "bin/tool")
	tool := filepath.Join(src, "bin/tool")
	os.Chown(tool, 0, 0)
	os.Chmod(tool, fs.ModeSetuid|0o755)
	os.Link(tool, filepath.Join(src, "bin/tool2"))
	tree(t, src, "home/app/")
	os.Chown(filepath.Join(src, "home/app"), 1000, 1000)
	if err := Copy(context.Background(), rootfs, CopySpec{SrcRoot: src, Sources: []string{"/"}, Dest: "/"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(rootfs, "bin/tool"))
	if err != nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Fatalf("setuid lost: %v %v", fi, err)
	}
	fi2, _ := os.Stat(filepath.Join(rootfs, "bin/tool2"))
	if !os.SameFile(fi, fi2) {
		t.Error("hard link became two files")
	}
	if u, g := owner(t, filepath.Join(rootfs, "home/app")); u != 1000 || g != 1000 {
		t.Errorf("home/app owned by %d:%d", u, g)
	}
}

func TestCopyDockerignoreWithExceptions(t *testing.T) {
	requireRoot(t)
	src, rootfs := t.TempDir(), t.TempDir()
	tree(t, src, "keep", "logs/a.log", "logs/important.log", "secret.key")
	pm, err := patternmatcher.New([]string{"logs", "!logs/important.log", "*.key"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Copy(context.Background(), rootfs, CopySpec{SrcRoot: src, FromContext: true, Excludes: pm, Sources: []string{"."}, Dest: "/app"}); err != nil {
		t.Fatal(err)
	}
	exists(t, rootfs, "app/keep", "app/logs/important.log")
	absent(t, rootfs, "app/logs/a.log", "app/secret.key")
	err = Copy(context.Background(), rootfs, CopySpec{SrcRoot: src, FromContext: true, Excludes: pm, Sources: []string{"secret.key"}, Dest: "/k"})
	if err == nil || !strings.Contains(err.Error(), "excluded by .dockerignore") {
		t.Fatalf("copying an excluded file: %v", err)
	}
}

func TestAddExtractsLocalTar(t *testing.T) {
	requireRoot(t)
	src, rootfs := t.TempDir(), t.TempDir()
	f, _ := os.Create(filepath.Join(src, "a.tar"))
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "pkg/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "pkg/file", Typeflag: tar.TypeReg, Mode: 0o600, Size: 2})
	tw.Write([]byte("hi"))
	tw.Close()
	f.Close()
	tree(t, src, "plain.txt")
	if err := Copy(context.Background(), rootfs, CopySpec{SrcRoot: src, FromContext: true, Sources: []string{"a.tar", "plain.txt"}, Dest: "/opt/", DestIsDir: true, ExtractArchives: true, Instruction: "ADD"}); err != nil {
		t.Fatal(err)
	}
	exists(t, rootfs, "opt/pkg/file", "opt/plain.txt")
	absent(t, rootfs, "opt/a.tar")
}
