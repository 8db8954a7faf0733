package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// pulledLayer is a test layer that says which repository it is pulled from.
type pulledLayer struct {
	*testLayer
	repo string
}

func (l *pulledLayer) SourceRepository() string { return l.repo }

// TestPulledLayerKeepsNoBlob: a layer from a registry is unpacked and verified, its blob is
// not stored, and its repository is; unpacking or saving it again reads nothing; its blob is
// downloaded again only when opened, through the fetcher.
func TestPulledLayerKeepsNoBlob(t *testing.T) {
	s := openStore(t)
	l := &pulledLayer{testLayer: newLayer(t, richTar(t, "gzip"), "gzip"), repo: "registry.example/base"}
	img := imageOf(t, l)
	dirs, err := s.Unpack(context.Background(), img, extractOpts)
	if err != nil {
		t.Fatal(err)
	}
	checkRichLayer(t, dirs[0], "gzip")
	if _, err := os.Stat(s.BlobPath(l.digest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the blob of a pulled layer was stored: %v", err)
	}
	if repo, ok := s.BlobSource(l.digest); !ok || repo != l.repo {
		t.Errorf("BlobSource = %q, %v; want %q", repo, ok, l.repo)
	}
	if _, err := s.Unpack(context.Background(), img, extractOpts); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveImage(context.Background(), img, "registry.example/base:1"); err != nil {
		t.Fatal(err)
	}
	if err := s.FetchBlobs(context.Background(), []v1.Layer{l}); err != nil {
		t.Fatal(err)
	}
	if n := l.reads.Load(); n != 1 {
		t.Errorf("the layer was read %d times, want once", n)
	}
	// A layer of the saved image, as a build sees it, unpacks from its directory.
	saved, err := s.Image("registry.example/base:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unpack(context.Background(), saved, extractOpts); err != nil {
		t.Fatalf("unpacking the saved image: %v", err)
	}

	desc := v1.Descriptor{Digest: l.digest, Size: int64(len(l.compressed)), MediaType: l.mediaType}
	if _, err := s.OpenBlob(desc); err == nil || !strings.Contains(err.Error(), "registry.example/base") {
		t.Errorf("OpenBlob without a fetcher: %v; want an error naming the repository", err)
	}
	var asked string
	s.SetFetcher(context.Background(), func(_ context.Context, repo string, d v1.Descriptor) (io.ReadCloser, error) {
		asked = repo + "@" + d.Digest.String()
		return io.NopCloser(bytes.NewReader(l.compressed)), nil
	})
	rc, err := s.OpenBlob(desc)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, err := io.ReadAll(rc); err != nil || !bytes.Equal(b, l.compressed) {
		t.Errorf("OpenBlob read %d bytes, %v", len(b), err)
	}
	if want := l.repo + "@" + l.digest.String(); asked != want {
		t.Errorf("fetched %q, want %q", asked, want)
	}
}

// TestPulledLayerUnpackedEarlier: a pulled layer whose directory exists without a blob or a
// record (a build killed between the two) gets its record, without being read.
func TestPulledLayerUnpackedEarlier(t *testing.T) {
	s := openStore(t)
	plain := newLayer(t, richTar(t, "gzip"), "gzip")
	if _, err := s.UnpackLayers(context.Background(), []v1.Layer{plain}, extractOpts); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.BlobPath(plain.digest)); err != nil {
		t.Fatal(err)
	}
	l := &pulledLayer{testLayer: plain, repo: "registry.example/base"}
	if _, err := s.UnpackLayers(context.Background(), []v1.Layer{l}, extractOpts); err != nil {
		t.Fatal(err)
	}
	if n := l.reads.Load(); n != 1 {
		t.Errorf("the layer was read %d times, want once (before the kill)", n)
	}
	if repo, ok := s.BlobSource(l.digest); !ok || repo != l.repo {
		t.Errorf("BlobSource = %q, %v; want %q", repo, ok, l.repo)
	}
}
