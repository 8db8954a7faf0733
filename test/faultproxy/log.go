package faultproxy

import (
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Request is one request the proxy received, as its log keeps it.
//
// A request is logged when it arrives and its entry is completed as it is answered:
// Status is set before the last byte of the answer leaves the proxy, so a client that
// has read a whole answer finds its Status in the log.
type Request struct {
	Method   string
	Path     string // URL path, decoded
	RawQuery string // URL query, encoded
	// Status is the HTTP status answered to the client, or 0 when the connection was
	// cut (by a fault, because the upstream broke off, or because the client went
	// away) or no answer was sent yet.
	Status int
	// Upstream is the status the upstream answered, or 0 if the request was not
	// forwarded or got no answer.
	Upstream int
	// Fault names the fault applied to the request (Rule.Name, or its Kind), or is
	// empty.
	Fault string
	// Received counts request body bytes passed on to the upstream; Sent counts
	// response body bytes sent to the client.
	Received, Sent int64
	// Err tells what went wrong when forwarding, if anything.
	Err string
	// Duration is how long the proxy took to handle the request (0 until Done).
	Duration time.Duration
	// Done tells whether the proxy has finished handling the request.
	Done bool
}

// Requests returns a copy of the log, in order of arrival.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.log))
	for i, e := range p.log {
		out[i] = *e
	}
	return out
}

// ClearRequests empties the log.
func (p *Proxy) ClearRequests() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = nil
}

// Count counts the logged requests with the method (case-insensitively; empty for any)
// whose path matches pathRegexp (empty for any). An invalid pathRegexp fails the test.
func (p *Proxy) Count(method, pathRegexp string) int {
	p.t.Helper()
	re, err := regexp.Compile(pathRegexp)
	if err != nil {
		p.t.Fatalf("faultproxy: counting requests: compiling path pattern: %v", err)
	}
	n := 0
	for _, r := range p.Requests() {
		if (method == "" || strings.EqualFold(method, r.Method)) && re.MatchString(r.Path) {
			n++
		}
	}
	return n
}

// CountFault counts the logged requests that the named fault (Rule.Name, or the Kind's
// name) was applied to.
func (p *Proxy) CountFault(name string) int {
	n := 0
	for _, r := range p.Requests() {
		if r.Fault == name {
			n++
		}
	}
	return n
}

// BlobUploads counts completed blob uploads by digest: a PUT to
// /v2/<name>/blobs/uploads/<id>?digest=<digest>, or a single-request POST to
// /v2/<name>/blobs/uploads/?digest=<digest>, answered 201 to the client.
func (p *Proxy) BlobUploads() map[string]int {
	put := regexp.MustCompile(`^/v2/.+/blobs/uploads/[^/]+$`)
	post := regexp.MustCompile(`^/v2/.+/blobs/uploads/?$`)
	counts := map[string]int{}
	for _, r := range p.Requests() {
		if r.Status != 201 {
			continue
		}
		q, err := url.ParseQuery(r.RawQuery)
		if err != nil || q.Get("digest") == "" {
			continue
		}
		switch {
		case r.Method == "PUT" && put.MatchString(r.Path),
			r.Method == "POST" && post.MatchString(r.Path) && q.Get("mount") == "":
			counts[q.Get("digest")]++
		}
	}
	return counts
}

// BlobMounts counts cross-repository blob mounts by digest: a POST to
// /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo> answered 201 to the client (a
// mount the registry refused is answered 202 and opens an upload instead).
func (p *Proxy) BlobMounts() map[string]int {
	post := regexp.MustCompile(`^/v2/.+/blobs/uploads/?$`)
	counts := map[string]int{}
	for _, r := range p.Requests() {
		if r.Status != 201 || r.Method != "POST" || !post.MatchString(r.Path) {
			continue
		}
		q, err := url.ParseQuery(r.RawQuery)
		if err != nil || q.Get("mount") == "" {
			continue
		}
		counts[q.Get("mount")]++
	}
	return counts
}
