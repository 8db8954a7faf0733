package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tarEntry is one entry of a test layer.
type tarEntry struct {
	hdr  tar.Header
	body string
}

func reg(name, body string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)}, body: body}
}

func dirEntry(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: time.Unix(1600000000, 0)}}
}

func link(typ byte, name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: target, Mode: 0o777, ModTime: time.Unix(1700000000, 0)}}
}

// makeTar writes entries as a tar, keeping whatever header fields each entry sets.
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing test tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatalf("writing test tar body %s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// snapshotTree records every path under dir with its type, size and content, to show a tree
// was not touched.
func snapshotTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return out
}

func TestExtractHostile(t *testing.T) {
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	if err := os.MkdirAll(filepath.Join(canary, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "secret"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	huge := reg("huge", "only ten b", 0o644)
	huge.hdr.Size = 1 << 40
	unknown := reg("weird", "", 0o644)
	unknown.hdr.Typeflag = 'Z'
	tests := []struct {
		name    string
		entries []tarEntry
		wantErr bool
		warn    string
		inside  []string // paths that must exist inside the extraction dir afterwards
	}{
		{name: "dotdot", entries: []tarEntry{reg("../../canary/x", "evil", 0o644)}, wantErr: true},
		{name: "dotdot after a dir", entries: []tarEntry{reg("a/../../../canary/secret", "evil", 0o644)}, wantErr: true},
		{name: "dotdot staying inside", entries: []tarEntry{reg("a/../b", "ok", 0o644)}, inside: []string{"b"}},
		{name: "absolute", entries: []tarEntry{reg(canary+"/abs", "evil", 0o644)},
			inside: []string{strings.TrimPrefix(canary, "/") + "/abs"}},
		{name: "absolute symlink then write through it", entries: []tarEntry{
			link(tar.TypeSymlink, "a", canary), reg("a/secret", "evil", 0o644), reg("a/sub/new", "evil", 0o644)},
			inside: []string{strings.TrimPrefix(canary, "/") + "/secret", strings.TrimPrefix(canary, "/") + "/sub/new"}},
		{name: "relative symlink escaping then write", entries: []tarEntry{
			link(tar.TypeSymlink, "d/up", "../../../../canary"), reg("d/up/secret", "evil", 0o644)},
			inside: []string{"canary/secret"}},
		{name: "symlink to etc then passwd", entries: []tarEntry{
			link(tar.TypeSymlink, "etc2", "/etc"), reg("etc2/passwd", "evil", 0o644)},
			inside: []string{"etc/passwd"}},
		{name: "symlink replaced by file is not followed", entries: []tarEntry{
			link(tar.TypeSymlink, "s", canary+"/secret"), reg("s", "evil", 0o644)},
			inside: []string{"s"}},
		{name: "hard link to outside", entries: []tarEntry{link(tar.TypeLink, "h", "../canary/secret")}, wantErr: true},
		{name: "hard link through symlink to outside", entries: []tarEntry{
			link(tar.TypeSymlink, "a", canary), link(tar.TypeLink, "h", "a/secret")}, wantErr: true},
		{name: "hard link absolute", entries: []tarEntry{link(tar.TypeLink, "h", canary+"/secret")}, wantErr: true},
		{name: "device nodes", entries: []tarEntry{
			{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3, Mode: 0o666}},
			{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8, Devminor: 0, Mode: 0o660}}},
			warn: "device node"},
		{name: "unknown type", entries: []tarEntry{unknown}, warn: "unknown tar entry type"},
		{name: "huge truncated entry", entries: []tarEntry{huge}, wantErr: true},
		{name: "whiteout escaping", entries: []tarEntry{reg("../canary/.wh.secret", "", 0)}, wantErr: true},
		{name: "opaque through symlink", entries: []tarEntry{link(tar.TypeSymlink, "a", canary), reg("a/.wh..wh..opq", "", 0)}},
	}
	before := snapshotTree(t, canary)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, "x", strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			raw := makeTarLoose(t, tc.entries)
			var warn bytes.Buffer
			err := Extract(context.Background(), bytes.NewReader(raw), dir, ExtractOptions{Warnings: &warn, SquashOwners: true})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Extract error = %v, want error: %v", err, tc.wantErr)
			}
			if tc.warn != "" && !strings.Contains(warn.String(), tc.warn) {
				t.Errorf("warnings %q lack %q", warn.String(), tc.warn)
			}
			for _, p := range tc.inside {
				if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
					t.Errorf("expected %s inside the extraction dir: %v", p, err)
				}
			}
			if after := snapshotTree(t, canary); !equalMaps(before, after) {
				t.Fatalf("canary changed:\nbefore %v\nafter  %v", before, after)
			}
			if _, err := os.Lstat("/etc/x"); err == nil {
				t.Fatal("/etc/x exists")
			}
		})
	}
}

// makeTarLoose writes a tar whose header sizes may lie about the bodies (for truncated entries).
func makeTarLoose(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing test tar header %s: %v", h.Name, err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Flush()
	return buf.Bytes()
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestExtractOverlayFormat(t *testing.T) {
	dir := t.TempDir()
	raw := makeTar(t,
		dirEntry("d/", 0o755), reg("d/.wh..wh..opq", "", 0), reg("d/keep", "k", 0o644),
		reg(".wh.gone", "", 0), reg("e/f/.wh.deep", "", 0),
		reg("old", "x", 0o644), reg(".wh.old", "", 0),
	)
	if err := Extract(context.Background(), bytes.NewReader(raw), dir, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"gone", "e/f/deep", "old"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Fatalf("whiteout %s: %v", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0/0 char device", p, st.Mode, st.Rdev)
		}
	}
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(filepath.Join(dir, "d"), OpaqueXattr, buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Fatalf("opaque xattr on d = %q, %v; want y", buf[:n], err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "d/keep")); err != nil || string(b) != "k" {
		t.Fatalf("d/keep = %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "d", opaqueMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("opaque marker written as a file: %v", err)
	}
}

func TestExtractMetadata(t *testing.T) {
	dir := t.TempDir()
	suid := reg("bin/su", "su", 0o4755)
	sgid := reg("bin/wall", "w", 0o2755)
	sticky := dirEntry("tmp/", 0o1777)
	x := reg("x", "data", 0o640)
	x.hdr.PAXRecords = map[string]string{paxXattrPrefix + "user.kiln": "hello", paxXattrPrefix + "user.overlay.opaque": "y"}
	dangling := link(tar.TypeSymlink, "bin/sh", "/no/such/busybox")
	raw := makeTar(t, dirEntry("bin/", 0o755), suid, sgid, sticky, x, dangling,
		link(tar.TypeLink, "bin/su2", "bin/su"), dirEntry("late/", 0o700), reg("late/child", "c", 0o600))
	var warn bytes.Buffer
	if err := Extract(context.Background(), bytes.NewReader(raw), dir, ExtractOptions{Warnings: &warn}); err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{
		"bin/su": 0o755 | os.ModeSetuid, "bin/wall": 0o755 | os.ModeSetgid, "tmp": 0o777 | os.ModeSticky | os.ModeDir,
		"x": 0o640, "late": 0o700 | os.ModeDir, "bin/sh": 0o777 | os.ModeSymlink,
	}
	for p, want := range modes {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	if target, _ := os.Readlink(filepath.Join(dir, "bin/sh")); target != "/no/such/busybox" {
		t.Errorf("symlink target %q", target)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "late")); !fi.ModTime().Equal(time.Unix(1600000000, 0)) {
		t.Errorf("dir mtime %v, want it set after its children", fi.ModTime())
	}
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(dir, "bin/su"), &a)
	unix.Lstat(filepath.Join(dir, "bin/su2"), &b)
	if a.Ino != b.Ino {
		t.Error("hard link not preserved")
	}
	if v, err := getXattr(pathXattrs(filepath.Join(dir, "x")), "user.kiln"); err != nil || v != "hello" {
		t.Errorf("user.kiln = %q, %v", v, err)
	}
	if ok, _ := hasXattr(filepath.Join(dir, "x"), OpaqueXattr); ok {
		t.Error("overlay xattr from the tar was applied")
	}
	if !strings.Contains(warn.String(), "overlay xattr") {
		t.Errorf("no warning for the overlay xattr: %q", warn.String())
	}
}

func TestExtractOwners(t *testing.T) {
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	canChown := os.Lchown(probe, 1000, 1001) == nil
	raw := makeTar(t, func() tarEntry { e := reg("f", "x", 0o4755); e.hdr.Uid, e.hdr.Gid = 1000, 1001; return e }())
	for _, squash := range []bool{false, true} {
		dir := t.TempDir()
		err := Extract(context.Background(), bytes.NewReader(raw), dir, ExtractOptions{SquashOwners: squash})
		var st unix.Stat_t
		switch {
		case canChown:
			if err != nil {
				t.Fatal(err)
			}
			unix.Lstat(filepath.Join(dir, "f"), &st)
			if st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o7777 != 0o4755 {
				t.Errorf("squash=%v: owner %d:%d mode %o, want 1000:1001 4755", squash, st.Uid, st.Gid, st.Mode&0o7777)
			}
		case !squash:
			if err == nil || !strings.Contains(err.Error(), "setting owner 1000:1001") {
				t.Errorf("unmappable owner without SquashOwners: %v, want an error naming the owner", err)
			}
		default:
			if err != nil {
				t.Fatal(err)
			}
			unix.Lstat(filepath.Join(dir, "f"), &st)
			if st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != 0o4755 {
				t.Errorf("squashed: owner %d:%d mode %o, want 0:0 4755", st.Uid, st.Gid, st.Mode&0o7777)
			}
		}
	}
}

func TestExtractCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Extract(ctx, bytes.NewReader(makeTar(t, reg("f", "x", 0o644))), t.TempDir(), ExtractOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Extract with a canceled context: %v", err)
	}
	if err := Extract(context.Background(), bytes.NewReader(nil), filepath.Join(t.TempDir(), "missing"), ExtractOptions{}); err == nil {
		t.Error("Extract into a missing directory succeeded")
	}
}

func TestExtractLiteralWhiteouts(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := makeTar(t, reg(".wh.keep", "", 0o644), reg("d/.wh..wh..opq", "", 0o644))
	if err := Extract(context.Background(), bytes.NewReader(raw), dir, ExtractOptions{LiteralWhiteouts: true}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"keep", ".wh.keep", "d/.wh..wh..opq"} {
		if fi, err := os.Lstat(filepath.Join(dir, p)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v, %v; want a regular file", p, fi, err)
		}
	}
	if ok, _ := hasXattr(filepath.Join(dir, "d"), OpaqueXattr); ok {
		t.Error("d marked opaque")
	}
}

func TestWriteDirRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "d"), 0o750)
	os.WriteFile(filepath.Join(src, "d", "f"), []byte("data"), 0o640)
	os.Symlink("d/f", filepath.Join(src, "link"))
	var buf bytes.Buffer
	if err := WriteDir(&buf, src, true); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := Extract(context.Background(), bytes.NewReader(buf.Bytes()), dst, ExtractOptions{LiteralWhiteouts: true}); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "d", "f")); err != nil || string(data) != "data" {
		t.Fatalf("file: %q %v", data, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "d/f" {
		t.Fatalf("link: %q %v", target, err)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "d")); fi.Mode().Perm() != 0o750 {
		t.Fatalf("dir mode %o", fi.Mode().Perm())
	}
}
