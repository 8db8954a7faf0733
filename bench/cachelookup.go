package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

// countingProxy is a reverse proxy in front of the test registry that
// counts the requests passing through it, by kind.
type countingProxy struct {
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	byKind map[string]int
}

// startCountingProxy listens on a free loopback port and forwards to the
// registry at target (host:port, plain HTTP). The Host header is kept, so
// the URLs the registry writes in Location headers lead back through the
// proxy.
func startCountingProxy(target string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the counting registry proxy: %w", err)
	}
	p := &countingProxy{ln: ln, byKind: map[string]int{}}
	u := &url.URL{Scheme: "http", Host: target}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host
	}}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.count(requestKind(r.Method, r.URL.Path))
		rp.ServeHTTP(w, r)
	})}
	go func() {
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("counting proxy: %v", err)
		}
	}()
	return p, nil
}

// addr is host:port of the proxy.
func (p *countingProxy) addr() string { return p.ln.Addr().String() }

func (p *countingProxy) count(kind string) {
	p.mu.Lock()
	p.byKind[kind]++
	p.mu.Unlock()
}

// reset forgets the counts so far.
func (p *countingProxy) reset() {
	p.mu.Lock()
	p.byKind = map[string]int{}
	p.mu.Unlock()
}

// counts returns the total and a copy of the counts by kind.
func (p *countingProxy) counts() (int, map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	total, out := 0, make(map[string]int, len(p.byKind))
	for k, n := range p.byKind {
		out[k] = n
		total += n
	}
	return total, out
}

func (p *countingProxy) close() { p.srv.Close() }

// requestKind classifies a registry API request as "METHOD endpoint repo",
// e.g. "GET manifests bench/cache-lookup" or "HEAD blobs busybox".
func requestKind(method, path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return method + " " + path
	}
	if rest == "" {
		return method + " /v2/"
	}
	for _, ep := range []string{"manifests", "blobs/uploads", "blobs", "tags", "referrers"} {
		if i := strings.LastIndex(rest, "/"+ep+"/"); i >= 0 {
			return method + " " + ep + " " + rest[:i]
		}
		if strings.HasSuffix(rest, "/"+ep) {
			return method + " " + ep + " " + strings.TrimSuffix(rest, "/"+ep)
		}
	}
	return method + " " + rest
}

// measureCacheLookup measures one fully cached rebuild from a registry cache
// into an empty store, counting its registry requests. Both builds pull the
// base image and talk to the cache through the counting proxy.
func (h *harness) measureCacheLookup(ctx context.Context, w workload, run int) cacheLookupRun {
	out := cacheLookupRun{Run: run}
	b, _ := builderByName("kiln")
	if h.proxy == nil {
		p, err := startCountingProxy("127.0.0.1:5000")
		if err != nil {
			out.Error = err.Error()
			return out
		}
		h.proxy = p
	}
	ref := h.proxy.addr() + "/bench/cache-lookup"
	args := []string{"BASE=" + h.proxy.addr() + "/busybox:latest"}
	rd, err := h.newRunDir(w, w.name, b.name, fmt.Sprint(run))
	defer h.removeRunDir(rd)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	populate := h.build(ctx, b, w, rd, "export", args, []string{"--cache-to", "type=registry,ref=" + ref + ",mode=max"})
	if populate.err != nil {
		out.Error, out.Log = "the build exporting the cache: "+populate.err.Error(), populate.log
		h.logf("%s: run %d: %s", w.name, run, out.Error)
		return out
	}
	out.PopulateSeconds = populate.wall.Seconds()
	if err := h.resetStore(rd); err != nil {
		out.Error = err.Error()
		return out
	}
	h.proxy.reset()
	res := h.build(ctx, b, w, rd, "import", args, []string{"--cache-from", "type=registry,ref=" + ref})
	out.Requests, out.ByKind = h.proxy.counts()
	out.WallSeconds, out.RunSeconds, out.Log = res.wall.Seconds(), res.runSeconds, res.log
	if res.err != nil {
		out.Error = res.err.Error()
		h.logf("%s: run %d: %s", w.name, run, out.Error)
		return out
	}
	h.logf("%s: run %d: cached rebuild %.2fs, %d registry requests (export build %.1fs)", w.name, run, out.WallSeconds, out.Requests, out.PopulateSeconds)
	return out
}
