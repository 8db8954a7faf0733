package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarEntry is one entry of a synthetic test layer.
type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
}

func reg(name, body string) tarEntry {
	return tarEntry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dir(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }

// testImage builds an in-memory image with one layer per entry list.
func testImage(t *testing.T, cfg v1.Config, layers ...[]tarEntry) v1.Image {
	t.Helper()
	img := empty.Image
	for _, entries := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid,
				Linkname: e.link, Size: int64(len(e.body))}
			if e.typ != tar.TypeReg {
				h.Size = 0
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(tw, e.body); err != nil && e.typ == tar.TypeReg {
				t.Fatal(err)
			}
		}
		tw.Close()
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	img, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestDiffImages checks that the comparison sees what it must see, applies
// whiteouts, and ignores what it must ignore.
func TestDiffImages(t *testing.T) {
	base := []tarEntry{dir("etc/"), reg("etc/a", "A"), reg("etc/b", "B"), dir("d/"), reg("d/x", "X")}
	tests := []struct {
		name   string
		a, b   v1.Image
		allow  diffAllow
		wantIn []string // substrings that must each appear in some diff; none: no diffs
	}{{
		name: "identical",
		a:    testImage(t, v1.Config{Cmd: []string{"sh"}}, base),
		b:    testImage(t, v1.Config{Cmd: []string{"sh"}}, base),
	}, {
		name:  "whiteout equals never having the file",
		a:     testImage(t, v1.Config{}, base, []tarEntry{reg("etc/.wh.b", "")}),
		b:     testImage(t, v1.Config{}, []tarEntry{dir("etc/"), reg("etc/a", "A"), dir("d/"), reg("d/x", "X")}),
		allow: diffAllow{Fields: []string{"History"}, Why: "layer counts differ by construction"},
	}, {
		name:  "opaque dir hides lower children only",
		a:     testImage(t, v1.Config{}, base, []tarEntry{dir("d/"), reg("d/.wh..wh..opq", ""), reg("d/y", "Y")}),
		b:     testImage(t, v1.Config{}, []tarEntry{dir("etc/"), reg("etc/a", "A"), reg("etc/b", "B"), dir("d/"), reg("d/y", "Y")}),
		allow: diffAllow{Fields: []string{"History"}, Why: "layer counts differ by construction"},
	}, {
		name:   "content, mode, owner and link differ",
		a:      testImage(t, v1.Config{}, []tarEntry{reg("f", "1"), {name: "g", typ: tar.TypeReg, mode: 0o600}, {name: "h", typ: tar.TypeReg, mode: 0o644, uid: 1000}, {name: "l", typ: tar.TypeSymlink, link: "/f"}}),
		b:      testImage(t, v1.Config{}, []tarEntry{reg("f", "2"), {name: "g", typ: tar.TypeReg, mode: 0o644}, {name: "h", typ: tar.TypeReg, mode: 0o644}, {name: "l", typ: tar.TypeSymlink, link: "f"}}),
		wantIn: []string{"/f: reg", "/g: reg 0600", "/h: reg 0644 1000:0", "/l: symlink"},
	}, {
		name: "missing whiteout is seen",
		a:    testImage(t, v1.Config{}, base),
		b:    testImage(t, v1.Config{}, base, []tarEntry{reg("etc/.wh.b", "")}),
		// History is not compared (knownDifferences: history-convention): the tree shows it.
		wantIn: []string{"/etc/b: only in first image"},
	}, {
		name:   "config fields",
		a:      testImage(t, v1.Config{Env: []string{"A=1"}, User: "app", Labels: map[string]string{"x": "1", "io.buildah.version": "1"}}),
		b:      testImage(t, v1.Config{Env: []string{"A=2"}, Labels: map[string]string{"x": "1"}}),
		wantIn: []string{"config Env", "config User"},
	}, {
		name:  "allowed paths and fields",
		a:     testImage(t, v1.Config{Env: []string{"A=1"}}, []tarEntry{reg("etc/hostname", "x"), dir("run/"), reg("run/y", "")}),
		b:     testImage(t, v1.Config{}),
		allow: diffAllow{Paths: []string{"/etc/host*", "/etc", "/run/..."}, Fields: []string{"Env", "History"}, Why: "test"},
	}, {
		name: "empty RUN mount points in one image only are a known difference",
		a:    testImage(t, v1.Config{}, base),
		b:    testImage(t, v1.Config{}, append(append([]tarEntry{}, base...), reg("etc/hosts", ""), dir("proc/"), dir("run/"))),
	}, {
		name:   "captured resolv.conf content is not",
		a:      testImage(t, v1.Config{}, append(append([]tarEntry{}, base...), reg("etc/resolv.conf", "nameserver 10.0.0.1\n"))),
		b:      testImage(t, v1.Config{}, base),
		wantIn: []string{"/etc/resolv.conf: only in first image"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			diffs, err := diffImages(tc.a, tc.b, tc.allow)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(diffs, "\n")
			if len(tc.wantIn) == 0 && len(diffs) > 0 {
				t.Errorf("unexpected differences:\n%s", all)
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(all, w) {
					t.Errorf("differences lack %q:\n%s", w, all)
				}
			}
			if len(tc.wantIn) > 0 && len(diffs) != len(tc.wantIn) {
				t.Errorf("got %d differences, want %d:\n%s", len(diffs), len(tc.wantIn), all)
			}
		})
	}
}
