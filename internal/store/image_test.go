package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// namesByDigest maps each image digest in the store to its sorted names.
func namesByDigest(t *testing.T, s *Store) map[v1.Hash]string {
	t.Helper()
	infos, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	out := map[v1.Hash]string{}
	for _, info := range infos {
		sort.Strings(info.Names)
		out[info.Digest] = strings.Join(info.Names, ",")
	}
	return out
}

func TestNamesMoveBetweenImages(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	imgs := make([]v1.Image, 3)
	for i := range imgs {
		img, err := random.Image(512, 2)
		if err != nil {
			t.Fatal(err)
		}
		imgs[i] = img
	}
	d := func(i int) v1.Hash { return digestOf(t, imgs[i]) }
	steps := []struct {
		img   int
		names []string
		want  map[v1.Hash]string
	}{
		{0, []string{"app:v1", "app"}, map[v1.Hash]string{d(0): "localhost/app:latest,localhost/app:v1"}},
		{1, []string{"localhost/app:latest"}, map[v1.Hash]string{d(0): "localhost/app:v1", d(1): "localhost/app:latest"}},
		{2, []string{"app:v1", "registry:5000/x/y:tag"}, map[v1.Hash]string{d(0): "", d(1): "localhost/app:latest", d(2): "localhost/app:v1,registry:5000/x/y:tag"}},
		{0, nil, map[v1.Hash]string{d(0): "", d(1): "localhost/app:latest", d(2): "localhost/app:v1,registry:5000/x/y:tag"}},
		{0, []string{"other"}, map[v1.Hash]string{d(0): "localhost/other:latest", d(1): "localhost/app:latest", d(2): "localhost/app:v1,registry:5000/x/y:tag"}},
	}
	for i, st := range steps {
		if err := s.SaveImage(ctx, imgs[st.img], st.names...); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got := namesByDigest(t, s)
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Fatalf("step %d: images %v, want %v", i, got, st.want)
		}
	}
	for name, want := range map[string]v1.Hash{"app": d(1), "app:v1": d(2), "registry:5000/x/y:tag": d(2), d(0).String(): d(0)} {
		img, err := s.Image(name)
		if err != nil {
			t.Fatalf("Image(%s): %v", name, err)
		}
		if got := digestOf(t, img); got != want {
			t.Fatalf("Image(%s) = %s, want %s", name, got, want)
		}
		if _, err := img.ConfigFile(); err != nil {
			t.Fatalf("Image(%s): reading config: %v", name, err)
		}
	}
}

func TestImageNotFoundAndRemove(t *testing.T) {
	s := openStore(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveImage(context.Background(), img, "app:v1", "app:v2"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app:v3", "nothing", "sha256:" + hex64} {
		if _, err := s.Image(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Image(%s): %v, want ErrNotFound", name, err)
		}
		if err := s.RemoveImage(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("RemoveImage(%s): %v, want ErrNotFound", name, err)
		}
	}
	if err := s.RemoveImage("app:v1"); err != nil {
		t.Fatal(err)
	}
	if got := namesByDigest(t, s); fmt.Sprint(got) != fmt.Sprint(map[v1.Hash]string{digestOf(t, img): "localhost/app:v2"}) {
		t.Fatalf("after removing one name: %v", got)
	}
	if err := s.RemoveImage("app:v2"); err != nil {
		t.Fatal(err)
	}
	if got := namesByDigest(t, s); len(got) != 0 {
		t.Fatalf("an image without names stayed after RemoveImage: %v", got)
	}
	if err := s.SaveImage(context.Background(), img, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveImage(digestOf(t, img).String()); err != nil {
		t.Fatal(err)
	}
	if got := namesByDigest(t, s); len(got) != 0 {
		t.Fatalf("RemoveImage by digest left %v", got)
	}
	byDigest := "registry:5000/x@sha256:" + hex64 // pulled by the digest of an index
	if err := s.SaveImage(context.Background(), img, byDigest); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Image(byDigest); err != nil || digestOf(t, got) != digestOf(t, img) {
		t.Fatalf("Image(%s): %v", byDigest, err)
	}
}

func TestImagesInfo(t *testing.T) {
	s := openStore(t)
	img, layers := richImage(t)
	if err := s.SaveImage(context.Background(), img, "rich"); err != nil {
		t.Fatal(err)
	}
	infos, err := s.Images()
	if err != nil || len(infos) != 1 {
		t.Fatalf("Images: %v, %v", infos, err)
	}
	m, _ := img.Manifest()
	raw, _ := img.RawManifest()
	want := int64(len(raw)) + m.Config.Size
	for _, l := range layers {
		want += int64(len(l.compressed))
	}
	info := infos[0]
	if info.Size != want || !info.Created.Equal(time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)) || info.Digest != digestOf(t, img) {
		t.Fatalf("Images()[0] = %+v, want size %d", info, want)
	}
}

func TestConcurrentSaveImage(t *testing.T) {
	s := openStore(t)
	other, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := random.Image(128, 1)
			if err == nil {
				st := []*Store{s, other}[i%2]
				err = st.SaveImage(context.Background(), img, fmt.Sprintf("img%d", i))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if infos, err := s.Images(); err != nil || len(infos) != n {
		t.Fatalf("after %d concurrent saves: %d images, %v", n, len(infos), err)
	}
}

// TestSkopeoReadsStore checks the store with an independent OCI layout
// reader: skopeo must find each local name and see the same digest.
func TestSkopeoReadsStore(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("skopeo (the oracle) is missing; remedy: apt-get install -y skopeo")
	}
	s := openStore(t)
	img, _ := richImage(t)
	// containers/image skips layout entries with Docker media types.
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	if err := s.SaveImage(context.Background(), img, "app:v1", "registry:5000/x/y:tag"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost/app:v1", "registry:5000/x/y:tag"} {
		out, err := exec.Command("skopeo", "inspect", "oci:"+s.Root()+":"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v\n%s", name, err, out)
		}
		var info struct {
			Digest string
			Layers []string
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatal(err)
		}
		if info.Digest != digestOf(t, img).String() || len(info.Layers) != 3 {
			t.Fatalf("skopeo sees %s: %+v", name, info)
		}
	}
}
