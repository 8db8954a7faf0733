package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// capV2 is a VFS_CAP_REVISION_2 security.capability value granting cap_net_bind_service.
var capV2 = string([]byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// buildTree makes an overlay-format directory exercising every entry kind WriteDiff knows. It
// reports whether owners other than the caller's could be set (false in a single-id user
// namespace).
func buildTree(t testing.TB, dir string) (chowned bool) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("long-name-", 12)
	must(os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "opaque/inner"), 0o750))
	must(os.MkdirAll(filepath.Join(dir, long), 0o755))
	must(os.WriteFile(filepath.Join(dir, "usr/bin/su"), []byte("#!/bin/su\n"), 0o755))
	must(unix.Chmod(filepath.Join(dir, "usr/bin/su"), 0o4755))
	must(os.WriteFile(filepath.Join(dir, "usr/bin/a.txt"), bytes.Repeat([]byte("abc"), 5000), 0o644))
	// With su, two more small files: WriteDiff reads them ahead (prefetch.go).
	must(os.WriteFile(filepath.Join(dir, "usr/bin/b.txt"), []byte("small"), 0o640))
	must(unix.Setxattr(filepath.Join(dir, "usr/bin/b.txt"), "user.kiln.small", []byte("s"), 0))
	must(os.WriteFile(filepath.Join(dir, "usr/bin/empty"), nil, 0o600))
	must(os.Link(filepath.Join(dir, "usr/bin/a.txt"), filepath.Join(dir, "usr/bin/z-link")))
	must(os.Symlink("../no/such", filepath.Join(dir, "usr/bin/dangling")))
	must(os.Symlink("/usr/bin/su", filepath.Join(dir, "abs-link")))
	must(os.WriteFile(filepath.Join(dir, long, long), []byte("long"), 0o600))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640))
	must(unix.Mknod(filepath.Join(dir, "deleted"), unix.S_IFCHR, 0))
	must(unix.Mknod(filepath.Join(dir, "usr/gone"), unix.S_IFCHR, 0))
	must(unix.Setxattr(filepath.Join(dir, "opaque"), OpaqueXattr, []byte("y"), 0))
	must(unix.Setxattr(filepath.Join(dir, "usr/bin/a.txt"), "user.kiln.note", []byte("v\x00binary"), 0))
	must(unix.Setxattr(filepath.Join(dir, "usr/bin/a.txt"), "user.overlay.origin", []byte("x"), 0))
	if os.Geteuid() == 0 {
		// security.capability needs CAP_SETFCAP (real root or root of a user namespace).
		must(unix.Setxattr(filepath.Join(dir, "usr/bin/su"), "security.capability", []byte(capV2), 0))
	}
	chowned = unix.Lchown(filepath.Join(dir, "usr/bin/a.txt"), 1000, 1001) == nil
	if chowned {
		must(unix.Lchown(filepath.Join(dir, "abs-link"), 1000, 1001))
	}
	for _, p := range []string{"usr/bin/su", "usr/bin/a.txt", "usr/bin", "usr", "opaque/inner", "opaque", long + "/" + long, long, "fifo"} {
		ts := []unix.Timespec{unix.NsecToTimespec(1e9), unix.NsecToTimespec(1650000000123456789)}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, p), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return chowned
}

func writeDiff(t testing.TB, dir string, opts WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteDiff(context.Background(), &buf, dir, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readHeaders(t testing.TB, raw []byte) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

func TestWriteDiffRoundTrip(t *testing.T) {
	src := t.TempDir()
	chowned := buildTree(t, src)
	first := writeDiff(t, src, WriteOptions{})
	if again := writeDiff(t, src, WriteOptions{}); !bytes.Equal(first, again) {
		t.Fatal("two WriteDiff calls on one tree differ")
	}
	dst := t.TempDir()
	if err := Extract(context.Background(), bytes.NewReader(first), dst, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if second := writeDiff(t, dst, WriteOptions{}); !bytes.Equal(first, second) {
		t.Fatalf("write → extract → write changed the layer:\n%s\n---\n%s", listing(t, first), listing(t, second))
	}

	byName := map[string]*tar.Header{}
	seen := map[string]bool{}
	for _, h := range readHeaders(t, first) {
		byName[h.Name] = h
		if dir := path.Dir(strings.TrimSuffix(h.Name, "/")); dir != "." && !seen[dir+"/"] {
			t.Errorf("%s comes before its parent %s/", h.Name, dir)
		}
		seen[h.Name] = true
		if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: header not normalized: %+v", h.Name, h)
		}
	}
	checks := []struct {
		name string
		ok   func(h *tar.Header) bool
	}{
		{".wh.deleted", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg && h.Size == 0 }},
		{"usr/.wh.gone", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg }},
		{"opaque/.wh..wh..opq", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg }},
		{"usr/bin/z-link", func(h *tar.Header) bool { return h.Typeflag == tar.TypeLink && h.Linkname == "usr/bin/a.txt" }},
		{"usr/bin/su", func(h *tar.Header) bool { return h.Mode == 0o4755 }},
		{"usr/bin/a.txt", func(h *tar.Header) bool {
			_, overlay := h.PAXRecords[paxXattrPrefix+"user.overlay.origin"]
			return h.PAXRecords[paxXattrPrefix+"user.kiln.note"] == "v\x00binary" && !overlay && (!chowned || h.Uid == 1000 && h.Gid == 1001)
		}},
		{"usr/bin/b.txt", func(h *tar.Header) bool {
			return h.Size == 5 && h.Mode == 0o640 && h.PAXRecords[paxXattrPrefix+"user.kiln.small"] == "s"
		}},
		{"usr/bin/empty", func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg && h.Size == 0 }},
		{"usr/bin/dangling", func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "../no/such" }},
		{"fifo", func(h *tar.Header) bool { return h.Typeflag == tar.TypeFifo && h.Mode == 0o640 }},
		{"usr/", func(h *tar.Header) bool { return h.ModTime.Equal(time.Unix(1650000000, 0)) }},
	}
	if os.Geteuid() == 0 {
		checks = append(checks, struct {
			name string
			ok   func(h *tar.Header) bool
		}{"usr/bin/su", func(h *tar.Header) bool { return h.PAXRecords[paxXattrPrefix+"security.capability"] == capV2 }})
	}
	for _, c := range checks {
		h, found := byName[c.name]
		if !found {
			t.Errorf("%s missing from the layer", c.name)
			continue
		}
		if !c.ok(h) {
			t.Errorf("%s: unexpected header %+v", c.name, h)
		}
	}
	if _, err := exec.LookPath("tar"); err == nil {
		cmd := exec.Command("tar", "--numeric-owner", "-tvf", "-")
		cmd.Stdin = bytes.NewReader(first)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("GNU tar cannot list the layer: %v\n%s", err, out)
		} else if !strings.Contains(string(out), "-rwsr-xr-x") || !strings.Contains(string(out), "usr/bin/z-link link to usr/bin/a.txt") {
			t.Errorf("GNU tar listing lacks the setuid file or the hard link:\n%s", out)
		}
	}
}

func listing(t testing.TB, raw []byte) string {
	var b strings.Builder
	for _, h := range readHeaders(t, raw) {
		b.WriteString(h.Name + " " + string(h.Typeflag) + " " + h.ModTime.String() + "\n")
	}
	return b.String()
}

func TestWriteDiffSourceDateEpoch(t *testing.T) {
	src := t.TempDir()
	buildTree(t, src)
	if err := os.WriteFile(filepath.Join(src, "new"), []byte("now"), 0o644); err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(1600000000, 0)
	for _, h := range readHeaders(t, writeDiff(t, src, WriteOptions{SourceDateEpoch: &epoch})) {
		if h.ModTime.After(epoch) {
			t.Errorf("%s: mtime %v after SOURCE_DATE_EPOCH", h.Name, h.ModTime)
		}
	}
}

func TestWriteDiffEmptyAndMissing(t *testing.T) {
	if raw := writeDiff(t, t.TempDir(), WriteOptions{}); len(readHeaders(t, raw)) != 0 {
		t.Error("empty directory gave entries")
	}
	err := WriteDiff(context.Background(), io.Discard, filepath.Join(t.TempDir(), "nope"), WriteOptions{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

// TestWriteDiffReadAhead checks that files read ahead of the writer give the same layer as
// files the writer reads itself, however little memory the reading ahead may hold: none (the
// writer reads every file), a few files' worth (some of each), or plenty.
func TestWriteDiffReadAhead(t *testing.T) {
	src := t.TempDir()
	for d := range 3 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", d), "sub")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 60 {
			for _, p := range []string{filepath.Dir(dir), dir} {
				f := filepath.Join(p, fmt.Sprintf("f%02d", i))
				if err := os.WriteFile(f, bytes.Repeat([]byte{byte('a' + i%26)}, i*100), 0o644); err != nil {
					t.Fatal(err)
				}
				if i%7 == 0 {
					if err := unix.Setxattr(f, "user.kiln.n", []byte(strconv.Itoa(i)), 0); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	write := func(budget int64) []byte {
		var buf bytes.Buffer
		if err := writeTree(context.Background(), &buf, src, WriteOptions{}, budget); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	want := write(0)
	if n := len(readHeaders(t, want)); n != 3*2+3*2*60 {
		t.Fatalf("layer has %d entries, want %d", n, 3*2+3*2*60)
	}
	for _, budget := range []int64{3 << 10, prefetchBudget} {
		if got := write(budget); !bytes.Equal(got, want) {
			t.Errorf("budget %d: the layer differs from the one written without reading ahead:\n%s\n---\n%s", budget, listing(t, got), listing(t, want))
		}
	}
}
