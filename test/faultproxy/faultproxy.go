// Package faultproxy is a fault-injecting reverse proxy for tests, to put in front of a
// container registry (the OCI distribution API).
//
// The proxy passes everything through unchanged (methods, headers, streamed bodies),
// except that absolute Location headers pointing at the upstream are rewritten to point
// at the proxy, so that upload sessions go on through it. At run time a test adds Rules
// that answer matching requests with an error status, reset their connection, cut their
// request or response body part-way, or stall their response; and it reads a log of
// what the client was answered, to check that a registry client survives transient
// faults and fails cleanly on permanent ones.
//
//	p := faultproxy.New(t, upstreamURL, faultproxy.Options{})
//	p.Add(faultproxy.Rule{Method: "GET", Path: `/blobs/sha256:`, Times: 1,
//		Kind: faultproxy.DropResponseBody, Bytes: 1000})
//	// ... pull from p.Host() ...
//	if n := p.CountFault("drop-response-body"); n != 1 { ... }
//
// The proxy speaks HTTP/1.1 only (to the client; the upstream transport may use
// anything), so that faults can take over the client's connection.
package faultproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Options configures a Proxy.
type Options struct {
	// Addr is the address to listen on; the default is a free port on 127.0.0.1.
	Addr string
	// CertFile and KeyFile, when given, make the proxy serve HTTPS with this
	// certificate (PEM files, as for tls.LoadX509KeyPair).
	CertFile, KeyFile string
	// UpstreamTransport reaches the upstream, for example trusting a test CA. The
	// default is a plain transport that ignores proxy settings of the environment.
	// An *http.Transport is cloned with DisableCompression set, so that it passes
	// bodies through as they are.
	UpstreamTransport http.RoundTripper
	// LogRequests logs every request with t.Logf; applied faults are always logged.
	LogRequests bool
}

// Proxy is a running fault-injecting proxy. Its methods are safe for concurrent use.
type Proxy struct {
	t         testing.TB
	upstream  *url.URL
	transport http.RoundTripper
	owned     *http.Transport // the transport to close idle connections of, if ours
	scheme    string
	host      string
	verbose   bool
	srv       *http.Server
	served    chan struct{} // closed when srv.Serve has returned

	ctx    context.Context // cancelled when the proxy closes
	cancel context.CancelFunc
	once   sync.Once

	mu      sync.Mutex
	rules   []*rule
	log     []*Request
	closing bool
	active  sync.WaitGroup // running handlers

	tmu     sync.Mutex // guards calls of t.Logf
	tclosed bool
}

// New starts a proxy in front of upstream (scheme://host[:port], with no path), and
// registers its Close with t.Cleanup. It fails the test if the proxy cannot start.
func New(t testing.TB, upstream *url.URL, o Options) *Proxy {
	t.Helper()
	if upstream == nil || (upstream.Scheme != "http" && upstream.Scheme != "https") || upstream.Host == "" {
		t.Fatalf("faultproxy: starting proxy: upstream %v is not an http or https URL", upstream)
	}
	if upstream.Path != "" && upstream.Path != "/" {
		t.Fatalf("faultproxy: starting proxy: upstream %v has a path; only a registry at the root is supported", upstream)
	}
	p := &Proxy{
		t:        t,
		upstream: &url.URL{Scheme: upstream.Scheme, Host: upstream.Host},
		scheme:   "http",
		verbose:  o.LogRequests,
		served:   make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())

	switch tr := o.UpstreamTransport.(type) {
	case nil:
		p.owned = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}
		p.transport = p.owned
	case *http.Transport:
		p.owned = tr.Clone()
		p.owned.DisableCompression = true
		p.transport = p.owned
	default:
		p.transport = tr
	}

	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var tlsConfig *tls.Config
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			t.Fatalf("faultproxy: starting proxy: loading TLS certificate: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
		p.scheme = "https"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("faultproxy: starting proxy: listening on %s: %v", addr, err)
	}
	p.host = ln.Addr().String()
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serve),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(logWriter{p}, "", 0),
	}
	go func() {
		defer close(p.served)
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logf("faultproxy: serving: %v", err)
		}
	}()
	t.Cleanup(p.Close)
	return p
}

// Host is the proxy's host:port, to put in image references.
func (p *Proxy) Host() string { return p.host }

// URL is the proxy's base URL (http://host:port, or https://).
func (p *Proxy) URL() *url.URL { return &url.URL{Scheme: p.scheme, Host: p.host} }

// Add adds a fault rule. An invalid rule fails the test, so Add belongs on the test's
// goroutine (like t.Fatal).
func (p *Proxy) Add(r Rule) {
	p.t.Helper()
	if err := r.check(); err != nil {
		p.t.Fatalf("faultproxy: adding rule: %v", err)
	}
	re, err := regexp.Compile(r.Path)
	if err != nil {
		p.t.Fatalf("faultproxy: adding rule: compiling path pattern: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &rule{Rule: r, path: re})
}

// Clear removes all rules; requests already being faulted go on as they started.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Close stops the proxy: it stops listening, cuts the connections it has (ending any
// stall), and waits for its handlers to return. Close is registered with t.Cleanup by
// New and may be called earlier, any number of times.
func (p *Proxy) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.closing = true
		p.mu.Unlock()
		p.cancel()
		p.srv.Close()
		<-p.served
		p.active.Wait()
		if p.owned != nil {
			p.owned.CloseIdleConnections()
		}
		p.tmu.Lock()
		p.tclosed = true
		p.tmu.Unlock()
	})
}

// logf logs with t.Logf until the proxy has closed.
func (p *Proxy) logf(format string, args ...any) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if !p.tclosed {
		p.t.Logf(format, args...)
	}
}

// logWriter passes the HTTP server's error log on to logf.
type logWriter struct{ p *Proxy }

func (w logWriter) Write(b []byte) (int, error) {
	w.p.logf("faultproxy: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// begin logs an arriving request and picks the rule that applies to it, if any. It
// returns the request's log entry, or nil if the proxy is closing.
func (p *Proxy) begin(r *http.Request) (*Request, *Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return nil, nil
	}
	p.active.Add(1)
	var applied *Rule
	for _, ru := range p.rules {
		if ru.matches(r) && ru.due() && applied == nil {
			rc := ru.Rule
			applied = &rc
		}
	}
	entry := &Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	if applied != nil {
		entry.Fault = applied.name()
	}
	p.log = append(p.log, entry)
	return entry, applied
}

// update changes a request's log entry (which the log may no longer hold).
func (p *Proxy) update(e *Request, f func(*Request)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(e)
}

// serve handles one request.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	entry, ru := p.begin(r)
	if entry == nil {
		panic(http.ErrAbortHandler) // closing: drop the connection
	}
	defer p.active.Done()
	start := time.Now()
	x := &exchange{p: p, w: w, r: r, rc: http.NewResponseController(w), entry: entry, rule: ru}
	defer func() {
		var done Request
		p.update(entry, func(q *Request) {
			q.Sent = x.sent
			if x.body != nil {
				q.Received = x.body.n.Load()
			}
			q.Duration = time.Since(start)
			q.Done = true
			done = *q
		})
		if p.verbose || ru != nil {
			p.logf("faultproxy: %s %s -> %d (upstream %d, fault %q, in %d, out %d) %s",
				r.Method, r.URL.RequestURI(), done.Status, done.Upstream, done.Fault, done.Received, done.Sent, done.Err)
		}
	}()
	switch {
	case ru != nil && ru.Kind == Status:
		x.status()
	case ru != nil && ru.Kind == Reset:
		x.cut(true, "")
	default:
		x.forward()
	}
}

// cutError is what a request body cut by DropRequestBody reads as upstream.
type cutError struct{}

func (cutError) Error() string { return "faultproxy: request body cut by a fault" }

// exchange is one request being handled.
type exchange struct {
	p     *Proxy
	w     http.ResponseWriter
	r     *http.Request
	rc    *http.ResponseController
	entry *Request     // the request's log entry
	rule  *Rule        // the fault to apply, or nil
	body  *requestBody // the request body as forwarded, or nil
	sent  int64        // response body bytes sent

	wroteHeader bool // the response headers are written
}

// is tells whether the exchange's fault is of kind k.
func (x *exchange) is(k Kind) bool { return x.rule != nil && x.rule.Kind == k }

// status answers with the rule's status and an OCI-style error body.
func (x *exchange) status() {
	code := x.rule.Code
	if code == "" {
		code = errorCode(x.rule.Status)
	}
	type ociError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, err := json.Marshal(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{code, fmt.Sprintf("faultproxy: injected fault %q: status %d", x.rule.name(), x.rule.Status)}}})
	if err != nil {
		panic(fmt.Sprintf("faultproxy: encoding an error body: %v", err)) // cannot happen
	}
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Docker-Distribution-Api-Version", "registry/2.0")
	if d := x.rule.RetryAfter; d > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
	}
	x.p.update(x.entry, func(q *Request) { q.Status = x.rule.Status })
	x.wroteHeader = true
	x.w.WriteHeader(x.rule.Status)
	if x.r.Method != http.MethodHead {
		if _, err := x.w.Write(body); err != nil {
			x.fail(fmt.Sprintf("sending status fault: %v", err))
		}
	}
}

// fail notes that the client connection broke.
func (x *exchange) fail(why string) {
	x.p.update(x.entry, func(q *Request) {
		q.Status = 0
		if q.Err == "" {
			q.Err = why
		}
	})
}

// cut closes the client connection without finishing the answer, with a TCP reset if
// reset is set. why, if not empty, is logged as the request's Err.
func (x *exchange) cut(reset bool, why string) {
	x.fail(why)
	if x.body != nil {
		x.body.shut.Store(true) // nothing may read the request after the hijack
	}
	if x.wroteHeader {
		_ = x.rc.Flush() // what was written goes out before the cut; an error means it is cut already
	}
	conn, _, err := x.rc.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection itself
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn() // no close_notify: the connection just breaks
	}
	if tcp, ok := conn.(*net.TCPConn); ok && reset {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// forward passes the request to the upstream and its answer back, applying the
// exchange's fault if it is one that acts while forwarding.
func (x *exchange) forward() {
	p, r := x.p, x.r
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(p.ctx, cancel)()

	if x.is(DropRequestBody) && r.ContentLength == 0 {
		x.cut(true, "")
		return
	}
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL = &url.URL{Scheme: p.upstream.Scheme, Host: p.upstream.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out.Host = p.upstream.Host
	out.Header = withoutHopHeaders(r.Header)
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil
	} else {
		x.body = &requestBody{src: r.Body, limit: -1}
		if x.is(DropRequestBody) {
			x.body.limit = x.rule.Bytes
			if r.ContentLength > 0 && x.body.limit >= r.ContentLength {
				x.body.limit = r.ContentLength - 1
			}
			x.body.cut = cancel
		}
		out.Body = x.body
	}

	resp, err := p.transport.RoundTrip(out)
	if x.is(DropRequestBody) {
		if err == nil {
			x.p.update(x.entry, func(q *Request) { q.Upstream = resp.StatusCode })
			resp.Body.Close()
		}
		cancel()
		x.cut(true, "")
		return
	}
	if err != nil {
		if r.Context().Err() != nil || p.ctx.Err() != nil {
			// The client, or the proxy, is going: no answer must look like one.
			x.cut(false, fmt.Sprintf("forwarding to upstream: %v", err))
			return
		}
		x.upstreamError(err)
		return
	}
	defer resp.Body.Close()
	x.p.update(x.entry, func(q *Request) { q.Upstream = resp.StatusCode })
	x.answer(ctx, resp)
}

// upstreamError answers 502 when the upstream could not be reached.
func (x *exchange) upstreamError(err error) {
	msg := fmt.Sprintf("faultproxy: forwarding to upstream: %v", err)
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": "UNKNOWN", "message": msg}}})
	x.w.Header().Set("Content-Type", "application/json")
	x.p.update(x.entry, func(q *Request) { q.Status = http.StatusBadGateway; q.Err = msg })
	x.wroteHeader = true
	x.w.WriteHeader(http.StatusBadGateway)
	_, _ = x.w.Write(body)
}

// answer sends the upstream's response to the client, applying DropResponseBody or
// Stall.
func (x *exchange) answer(ctx context.Context, resp *http.Response) {
	// Where a fault acts on the response: -1 before the headers, else after that
	// many body bytes, never at or past the end of the body.
	at := int64(-2) // no fault
	if x.is(DropResponseBody) || x.is(Stall) {
		at = x.rule.Bytes
		if at < 0 || bodyless(x.r, resp) {
			at = -1
		} else if resp.ContentLength > 0 && at >= resp.ContentLength {
			at = resp.ContentLength - 1
		}
	}
	if at == -1 {
		if x.is(DropResponseBody) {
			x.cut(false, "")
			return
		}
		if !x.stall(ctx) {
			return
		}
	}

	h := x.w.Header()
	for k, vs := range withoutHopHeaders(resp.Header) {
		h[k] = vs
	}
	for _, k := range []string{"Location", "Content-Location"} {
		if v := h.Get(k); v != "" {
			h.Set(k, x.p.rewriteLocation(v))
		}
	}
	for _, k := range []string{"Content-Type", "Date"} {
		if _, ok := h[k]; !ok {
			h[k] = nil // the server must not add its own
		}
	}
	x.p.update(x.entry, func(q *Request) { q.Status = resp.StatusCode })
	x.wroteHeader = true
	x.w.WriteHeader(resp.StatusCode)

	if at >= 0 {
		if !x.copy(resp.Body, at) {
			return
		}
		if x.is(DropResponseBody) {
			x.cut(false, "")
			return
		}
		if err := x.rc.Flush(); err != nil {
			x.fail(fmt.Sprintf("sending response: %v", err))
			return
		}
		if !x.stall(ctx) {
			return
		}
	}
	x.copy(resp.Body, -1)
}

// copy streams up to n bytes (all if n < 0) of the response body to the client,
// flushing as it goes. It tells whether the exchange may go on; if not, the client
// connection is broken or cut.
func (x *exchange) copy(body io.Reader, n int64) bool {
	buf := make([]byte, 32*1024)
	for n != 0 {
		b := buf
		if n > 0 && int64(len(b)) > n {
			b = b[:n]
		}
		m, rerr := body.Read(b)
		if m > 0 {
			w, werr := x.w.Write(b[:m])
			x.sent += int64(w)
			if n > 0 {
				n -= int64(w)
			}
			if werr == nil {
				werr = x.rc.Flush()
			}
			if werr != nil {
				x.fail(fmt.Sprintf("sending response body: %v", werr))
				return false
			}
		}
		if rerr == io.EOF {
			return true
		}
		if rerr != nil {
			// The upstream broke off: so must the answer, or the client could take a
			// truncated chunked body for a whole one.
			x.cut(false, fmt.Sprintf("reading upstream response body: %v", rerr))
			return false
		}
	}
	return true
}

// stall waits as the exchange's Stall rule says. It tells whether the exchange may go
// on; if not, the client connection is cut.
func (x *exchange) stall(ctx context.Context) bool {
	var done <-chan time.Time
	if !x.rule.Hang {
		timer := time.NewTimer(x.rule.Delay)
		defer timer.Stop()
		done = timer.C
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
		x.cut(false, "stall ended by the client going away or the proxy closing")
		return false
	}
}

// rewriteLocation points a URL at the proxy if it points at the upstream.
func (p *Proxy) rewriteLocation(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || !strings.EqualFold(u.Host, p.upstream.Host) {
		return loc
	}
	u.Scheme, u.Host = p.scheme, p.host
	return u.String()
}

// bodyless tells whether a response has no body to speak of.
func bodyless(req *http.Request, resp *http.Response) bool {
	s := resp.StatusCode
	return req.Method == http.MethodHead || s < 200 || s == http.StatusNoContent ||
		s == http.StatusNotModified || resp.ContentLength == 0
}

// withoutHopHeaders copies a header without its hop-by-hop fields, those that concern
// one connection rather than the message.
func withoutHopHeaders(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	for _, v := range h.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out.Del(f)
			}
		}
	}
	for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		out.Del(k)
	}
	return out
}

// requestBody is a request body as forwarded to the upstream: it counts what passes
// and, for DropRequestBody, cuts it.
type requestBody struct {
	src   io.Reader
	limit int64 // bytes to pass before cutting, or -1
	cut   func()
	n     atomic.Int64 // bytes passed
	shut  atomic.Bool  // set when the client connection is taken over
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.shut.Load() {
		return 0, cutError{}
	}
	if b.limit >= 0 {
		left := b.limit - b.n.Load()
		if left <= 0 {
			b.cut()
			return 0, cutError{}
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := b.src.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF && b.limit >= 0 {
		// A chunked body ended before the limit: the upstream must not see its end.
		b.cut()
		return n, cutError{}
	}
	return n, err
}

// Close does nothing: the server closes the client's request body itself.
func (b *requestBody) Close() error { return nil }
