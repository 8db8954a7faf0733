package faultproxy

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestTimesAfterClear(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	v2 := p.URL().String() + "/v2/"
	statuses := func(n int) []int {
		var s []int
		for range n {
			s = append(s, statusOf(t, c, http.MethodGet, v2))
		}
		return s
	}

	p.Add(Rule{Method: "GET", Path: `^/v2/$`, After: 2, Times: 2, Kind: Status, Status: 500})
	p.Add(Rule{Method: "POST", Path: `^/v2/$`, Kind: Status, Status: 418}) // never matches
	if got, want := fmt.Sprint(statuses(6)), "[200 200 500 500 200 200]"; got != want {
		t.Errorf("After 2, Times 2: statuses %s, want %s", got, want)
	}

	// Every rule counts every request it matches; the first due applies.
	p.Clear()
	p.Add(Rule{Path: `^/v2/$`, Times: 1, Kind: Status, Status: 500})
	p.Add(Rule{Path: `^/v2/$`, Times: 2, Kind: Status, Status: 503})
	if got, want := fmt.Sprint(statuses(3)), "[500 503 200]"; got != want {
		t.Errorf("two rules: statuses %s, want %s", got, want)
	}

	// A permanent fault lasts until Clear.
	p.Clear()
	p.Add(Rule{Method: "get", Path: `/v2/`, Kind: Status, Status: 503})
	if got, want := fmt.Sprint(statuses(3)), "[503 503 503]"; got != want {
		t.Errorf("permanent fault: statuses %s, want %s", got, want)
	}
	p.Clear()
	if got, want := fmt.Sprint(statuses(1)), "[200]"; got != want {
		t.Errorf("after Clear: statuses %s, want %s", got, want)
	}

	if n := p.Count("GET", `^/v2/$`); n != 13 {
		t.Errorf("Count(GET, ^/v2/$) = %d, want 13", n)
	}
	if n := p.Count("", ""); n != 13 {
		t.Errorf("Count of everything = %d, want 13", n)
	}
	if n := p.Count("POST", ""); n != 0 {
		t.Errorf("Count(POST) = %d, want 0", n)
	}
	if n := p.CountFault("status"); n != 7 {
		t.Errorf("CountFault(status) = %d, want 7", n)
	}
}

func TestBlobUploadsAndMounts(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	opts := remoteOpts(t, nil)
	img := pushPull(t, p, "test/a", opts)
	// Pushing again uploads nothing.
	if err := remote.Write(ref(t, p.Host()+"/test/a:again"), img, opts...); err != nil {
		t.Fatalf("pushing again: %v", err)
	}
	uploads := p.BlobUploads()
	if len(uploads) != 4 {
		t.Errorf("uploads %v, want 4 blobs", uploads)
	}
	for d, n := range uploads {
		if n != 1 {
			t.Errorf("blob %s uploaded %d times, want 1", d, n)
		}
	}

	layers, _ := img.Layers()
	from := ref(t, p.Host()+"/test/a:latest")
	dest := ref(t, p.Host()+"/test/b:latest").Context()
	if err := remote.WriteLayer(dest, &remote.MountableLayer{Layer: layers[0], Reference: from}, opts...); err != nil {
		t.Fatalf("mounting a layer: %v", err)
	}
	d, _ := layers[0].Digest()
	if m := p.BlobMounts(); len(m) != 1 || m[d.String()] != 1 {
		t.Errorf("mounts %v, want %v once", m, d)
	}
	if u := p.BlobUploads(); len(u) != 4 {
		t.Errorf("uploads after a mount: %v, want the 4 of before", u)
	}

	// A layer that cannot be mounted is uploaded.
	other, err := random.Layer(1000, types.DockerLayer)
	if err != nil {
		t.Fatalf("making a layer: %v", err)
	}
	if err := remote.WriteLayer(dest, &remote.MountableLayer{Layer: other, Reference: from}, opts...); err != nil {
		t.Fatalf("writing a layer: %v", err)
	}
	od, _ := other.Digest()
	if p.BlobUploads()[od.String()] != 1 || len(p.BlobMounts()) != 1 {
		t.Errorf("unmountable layer: uploads %v, mounts %v", p.BlobUploads(), p.BlobMounts())
	}
}

// TestClientRetries shows the intended use: a registry client's retries get it past
// transient faults.
