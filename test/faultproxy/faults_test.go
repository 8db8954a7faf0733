package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestStatusFault(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	p.Add(Rule{Method: "GET", Path: `^/v2/$`, Times: 1, Kind: Status, Status: 503, RetryAfter: 1500 * time.Millisecond})
	p.Add(Rule{Method: "HEAD", Path: `/manifests/`, Times: 1, Kind: Status, Status: 429, Name: "slow down"})

	resp := do(t, c, http.MethodGet, p.URL().String()+"/v2/", nil)
	var body struct {
		Errors []struct{ Code, Message string }
	}
	err := json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || err != nil ||
		len(body.Errors) != 1 || body.Errors[0].Code != "UNAVAILABLE" {
		t.Errorf("got status %d, Retry-After %q, body %+v (%v); want 503, 2, UNAVAILABLE",
			resp.StatusCode, resp.Header.Get("Retry-After"), body, err)
	}
	if s := statusOf(t, c, http.MethodGet, p.URL().String()+"/v2/"); s != 200 {
		t.Errorf("second GET: status %d, want 200", s)
	}
	resp = do(t, c, http.MethodHead, p.URL().String()+"/v2/x/manifests/latest", nil)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "" {
		t.Errorf("HEAD: status %d, Retry-After %q; want 429 and none", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	wantLog(t, p, 0, Request{Method: "GET", Status: 503, Fault: "status"})
	wantLog(t, p, 1, Request{Method: "GET", Status: 200, Upstream: 200})
	wantLog(t, p, 2, Request{Method: "HEAD", Status: 429, Fault: "slow down"})
	if p.CountFault("slow down") != 1 || p.CountFault("status") != 1 {
		t.Errorf("fault counts %d, %d; want 1, 1", p.CountFault("slow down"), p.CountFault("status"))
	}
}

func TestReset(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	p.Add(Rule{Path: `^/v2/$`, Kind: Reset, Times: 2})

	conn, err := net.Dial("tcp", p.Host())
	if err != nil {
		t.Fatalf("dialing the proxy: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("writing a request: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 100))
	if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read %d bytes, %v; want a connection reset", n, err)
	}

	if _, err := try(client(t, nil), http.MethodGet, p.URL().String()+"/v2/", nil); err == nil {
		t.Errorf("GET through a reset: no error")
	}
	if s := statusOf(t, client(t, nil), http.MethodGet, p.URL().String()+"/v2/"); s != 200 {
		t.Errorf("third GET: status %d, want 200", s)
	}
	wantLog(t, p, 0, Request{Method: "GET", Fault: "reset"})
	wantLog(t, p, 1, Request{Method: "GET", Fault: "reset"})
	wantLog(t, p, 2, Request{Method: "GET", Status: 200, Upstream: 200})
}

func TestDropResponseBody(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	base := p.URL().String()
	b, digest := blob(t, 100*1024)
	if s := putBlob(t, c, base, "test/drop", b, digest); s != http.StatusCreated {
		t.Fatalf("uploading a blob: status %d", s)
	}
	p.ClearRequests()
	blobURL := base + "/v2/test/drop/blobs/" + digest

	// Cut after 1000 bytes, then past the end of the body, then before the headers.
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: DropResponseBody, Bytes: 1000})
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, After: 1, Times: 1, Kind: DropResponseBody, Bytes: 1 << 30, Name: "past end"})
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, After: 2, Times: 1, Kind: DropResponseBody, Bytes: -1, Name: "no headers"})
	for i, want := range []int{1000, len(b) - 1} {
		resp := do(t, c, http.MethodGet, blobURL, nil)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(b)) || len(got) != want ||
			!errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, b[:want]) {
			t.Errorf("GET %d: status %d, length %d, got %d bytes, %v; want 200, %d, %d bytes and an unexpected EOF",
				i, resp.StatusCode, resp.ContentLength, len(got), err, len(b), want)
		}
	}
	if _, err := try(c, http.MethodGet, blobURL, nil); err == nil {
		t.Errorf("GET cut before the headers: no error")
	}
	resp := do(t, c, http.MethodGet, blobURL, nil)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("fourth GET: %d bytes, %v; want the whole blob", len(got), err)
	}
	if e := wantLog(t, p, 0, Request{Method: "GET", Upstream: 200, Fault: "drop-response-body"}); e.Sent != 1000 {
		t.Errorf("first GET logged %d bytes sent, want 1000", e.Sent)
	}
	wantLog(t, p, 1, Request{Method: "GET", Upstream: 200, Fault: "past end"})
	wantLog(t, p, 2, Request{Method: "GET", Upstream: 200, Fault: "no headers"})
	wantLog(t, p, 3, Request{Method: "GET", Status: 200, Upstream: 200})
}

func TestDropRequestBody(t *testing.T) {
	up := upstream(t, nil)
	p := New(t, up, Options{})
	c := client(t, nil)
	base := p.URL().String()
	b, digest := blob(t, 200*1024)
	exists := func() int {
		return statusOf(t, c, http.MethodHead, up.String()+"/v2/test/dropreq/blobs/"+digest)
	}

	// A PUT of known length, cut after 1000 bytes.
	p.Add(Rule{Method: "PUT", Path: `/blobs/uploads/`, Times: 1, Kind: DropRequestBody, Bytes: 1000})
	resp := do(t, c, http.MethodPost, base+"/v2/test/dropreq/blobs/uploads/", nil)
	resp.Body.Close()
	if _, err := try(c, http.MethodPut, resp.Header.Get("Location")+"?digest="+digest, bytes.NewReader(b)); err == nil {
		t.Errorf("PUT with its body cut: no error")
	}
	if s := exists(); s != http.StatusNotFound {
		t.Errorf("blob after a cut PUT: HEAD status %d, want 404", s)
	}
	if e := wantLog(t, p, 1, Request{Method: "PUT", Fault: "drop-request-body"}); e.Received != 1000 {
		t.Errorf("cut PUT logged %d bytes received, want 1000", e.Received)
	}

	// A single-request chunked upload shorter than Bytes: the upstream never sees its end.
	p.Add(Rule{Method: "POST", Path: `/blobs/uploads/`, Times: 1, Kind: DropRequestBody, Bytes: 1 << 30})
	chunked := io.MultiReader(bytes.NewReader(b)) // hides the length
	if _, err := try(c, http.MethodPost, base+"/v2/test/dropreq/blobs/uploads/?digest="+digest, chunked); err == nil {
		t.Errorf("chunked POST with its body cut: no error")
	}
	if s := exists(); s != http.StatusNotFound {
		t.Errorf("blob after a cut chunked POST: HEAD status %d, want 404", s)
	}
	if e := wantLog(t, p, 2, Request{Method: "POST", Fault: "drop-request-body"}); e.Received != int64(len(b)) {
		t.Errorf("cut POST logged %d bytes received, want %d", e.Received, len(b))
	}

	if s := putBlob(t, c, base, "test/dropreq", b, digest); s != http.StatusCreated {
		t.Errorf("uploading without a fault: status %d", s)
	}
	if s := exists(); s != http.StatusOK {
		t.Errorf("blob after an upload: HEAD status %d, want 200", s)
	}
	if u := p.BlobUploads(); len(u) != 1 || u[digest] != 1 {
		t.Errorf("uploads %v, want %s once", u, digest)
	}
}

func TestStall(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	c := client(t, nil)
	base := p.URL().String()
	b, digest := blob(t, 50*1024)
	if s := putBlob(t, c, base, "test/stall", b, digest); s != http.StatusCreated {
		t.Fatalf("uploading a blob: status %d", s)
	}
	blobURL := base + "/v2/test/stall/blobs/" + digest
	const delay = 300 * time.Millisecond

	t.Run("delay", func(t *testing.T) {
		p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: Stall, Bytes: 1000, Delay: delay})
		resp := do(t, c, http.MethodGet, blobURL, nil)
		defer resp.Body.Close()
		head := make([]byte, 1000)
		if _, err := io.ReadFull(resp.Body, head); err != nil {
			t.Fatalf("reading the first 1000 bytes: %v", err)
		}
		start := time.Now()
		rest, err := io.ReadAll(resp.Body)
		if took := time.Since(start); took < delay-50*time.Millisecond {
			t.Errorf("the rest came after %v, want about %v", took, delay)
		}
		if err != nil || !bytes.Equal(append(head, rest...), b) {
			t.Errorf("read %d bytes, %v; want the whole blob", 1000+len(rest), err)
		}
	})

	t.Run("before headers", func(t *testing.T) {
		p.Add(Rule{Method: "HEAD", Path: `/blobs/sha256:`, Times: 1, Kind: Stall, Bytes: 0, Delay: delay})
		start := time.Now()
		if s := statusOf(t, c, http.MethodHead, blobURL); s != 200 {
			t.Errorf("HEAD: status %d", s)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("HEAD answered after %v, want %v at least", took, delay)
		}
	})

	t.Run("hang", func(t *testing.T) {
		p.ClearRequests()
		p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: Stall, Bytes: 1000, Hang: true})
		ctx, cancel := context.WithTimeout(context.Background(), delay)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, blobURL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(got) != 1000 || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("read %d bytes, %v; want 1000 and the client's deadline", len(got), err)
		}
		if e := wantLog(t, p, 0, Request{Method: "GET", Upstream: 200, Fault: "stall"}); e.Sent != 1000 {
			t.Errorf("hung GET logged %d bytes sent, want 1000", e.Sent)
		}
	})

	t.Run("hang until close", func(t *testing.T) {
		q := New(t, p.upstream, Options{})
		q.Add(Rule{Method: "GET", Kind: Stall, Bytes: 1000, Hang: true})
		resp := do(t, c, http.MethodGet, q.URL().String()+"/v2/test/stall/blobs/"+digest, nil)
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
			t.Fatalf("reading the first 1000 bytes: %v", err)
		}
		start := time.Now()
		q.Close()
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("reading after the proxy closed: no error")
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("closing the proxy during a hang took %v", took)
		}
	})
}

func TestClientRetries(t *testing.T) {
	p := New(t, upstream(t, nil), Options{})
	p.Add(Rule{Method: "GET", Path: `/manifests/`, Times: 2, Kind: Status, Status: 503})
	p.Add(Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1, Kind: Status, Status: 500})
	pushPull(t, p, "test/retry", remoteOpts(t, nil))
	if n := p.CountFault("status"); n != 3 {
		t.Errorf("%d faults applied, want 3", n)
	}
}

// tlsFiles makes a CA and a certificate it signs for 127.0.0.1 and localhost, writes
// the certificate and key to files, and returns the CA pool, the files and the
// certificate.
