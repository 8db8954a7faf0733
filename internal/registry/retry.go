package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// retryPolicy says how often and how patiently registry requests are retried.
type retryPolicy struct {
	// retries is how many times a request is retried after its first attempt.
	retries int
	// delay is the wait before the first retry; each further retry doubles it, up to maxDelay,
	// with ±25% jitter so that many builders do not retry in step.
	delay time.Duration
	// idle is how long a response may send nothing (headers or body) before the request is
	// abandoned as stalled.
	idle time.Duration
}

// maxDelay caps the exponential backoff between two attempts.
const maxDelay = 30 * time.Second

// maxRetryAfter caps how long a Retry-After header can make kiln wait.
const maxRetryAfter = 2 * time.Minute

// wait is the pause before retry number attempt+1. A Retry-After header in resp (429 or 503)
// is honoured when it asks for longer than the backoff.
func (p retryPolicy) wait(attempt int, resp *http.Response) time.Duration {
	d := p.delay << min(attempt, 16)
	if d > maxDelay || d <= 0 {
		d = maxDelay
	}
	d = time.Duration(float64(d) * (0.75 + rand.Float64()/2)) //nolint:gosec // jitter needs no crypto
	if ra := retryAfter(resp); ra > d {
		d = min(ra, maxRetryAfter)
	}
	return d
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// retryableStatus reports answers worth asking again: the registry or something in front of
// it is busy, rate-limiting or briefly broken.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// errStalled is the cause given when a response sends nothing for longer than the idle
// timeout.
var errStalled = errors.New("the registry stopped sending data")

// transient reports whether err is worth retrying: a dropped or reset connection, a timeout,
// a stalled body, or a registry answer that says "later". Certificate problems, refused
// credentials, missing names and unknown hosts are permanent.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) && !errors.Is(err, errStalled) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return retryableStatus(terr.StatusCode)
	}
	var certErr *x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidErr x509.CertificateInvalidError
	var dnsErr *net.DNSError
	var plain *plainHTTPError
	switch {
	case errors.As(err, &certErr), errors.As(err, &hostErr), errors.As(err, &invalidErr),
		errors.As(err, &plain):
		return false
	case errors.As(err, &dnsErr):
		return dnsErr.IsTemporary || dnsErr.IsTimeout
	case errors.Is(err, errStalled), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}

// retryTransport retries requests that failed transiently, when their body can be sent again,
// and abandons responses that stall. It sits under go-containerregistry's auth transports, so
// token requests are retried too.
type retryTransport struct {
	next   http.RoundTripper
	policy retryPolicy
}

// opState is shared by the requests of one operation (a pull, a push): the transport notes
// there that it already spent its retries on a request, so the operation is not retried on top.
type opState struct{ exhausted atomic.Bool }

type opStateKey struct{}

func withOpState(ctx context.Context) (context.Context, *opState) {
	s := &opState{}
	return context.WithValue(ctx, opStateKey{}, s), s
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	replayable := canReplay(req)
	for attempt := 0; ; attempt++ {
		out := req
		if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("rewinding the body of %s %s to retry it: %w", req.Method, req.URL.Redacted(), err)
			}
			out = req.Clone(req.Context())
			out.Body = body
		}
		resp, err := t.attempt(out)
		failed := err != nil && transient(err) || err == nil && retryableStatus(resp.StatusCode)
		if !failed {
			return resp, err
		}
		if !replayable || attempt >= t.policy.retries {
			if s, ok := req.Context().Value(opStateKey{}).(*opState); ok && replayable && t.policy.retries > 0 {
				s.exhausted.Store(true)
			}
			return resp, err
		}
		pause := t.policy.wait(attempt, resp)
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if err := sleep(req.Context(), pause); err != nil {
			return nil, err
		}
	}
}

// canReplay reports whether req may be sent again after a failure. Upload chunks may not:
// the registry may have kept part of a cut PATCH, and sending it again from the start then
// corrupts or invalidates the upload session (the whole push is retried instead).
func canReplay(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	if req.GetBody == nil {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		return true
	case http.MethodPut:
		return strings.Contains(req.URL.Path, "/manifests/")
	}
	return false
}

// attempt sends req once, under a context that a watchdog cancels when the response stalls.
func (t *retryTransport) attempt(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	dog := newWatchdog(t.policy.idle, cancel)
	out := req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		// An upload is making progress as long as its body is being read.
		out.Body = &fedBody{ReadCloser: req.Body, dog: dog}
	}
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		dog.stop()
		cancel(nil)
		if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), cause)
		}
		return nil, err
	}
	dog.reset()
	resp.Body = &watchedBody{ReadCloser: resp.Body, dog: dog, ctx: ctx, cancel: cancel}
	return resp, nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watchdog cancels a request when it is not fed within the idle timeout.
type watchdog struct {
	timer *time.Timer
	idle  time.Duration
}

func newWatchdog(idle time.Duration, cancel context.CancelCauseFunc) *watchdog {
	if idle <= 0 {
		return &watchdog{}
	}
	return &watchdog{idle: idle, timer: time.AfterFunc(idle, func() {
		cancel(fmt.Errorf("%w for %s", errStalled, idle))
	})}
}

func (w *watchdog) reset() {
	if w.timer != nil {
		w.timer.Reset(w.idle)
	}
}

func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// fedBody feeds the watchdog while a request body is sent.
type fedBody struct {
	io.ReadCloser
	dog *watchdog
}

func (b *fedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.dog.reset()
	}
	return n, err
}

// watchedBody feeds the watchdog on every read and reports a stall as such.
type watchedBody struct {
	io.ReadCloser
	dog    *watchdog
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.dog.reset()
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); errors.Is(cause, errStalled) {
			err = cause
		}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.dog.stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// gaveUpError is a transient failure that outlasted every retry.
type gaveUpError struct {
	retries int
	err     error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%v (gave up after %d retries)", e.err, e.retries)
}

func (e *gaveUpError) Unwrap() error { return e.err }

// retry runs op, and runs it again after transient failures that the transport could not
// retry itself (a connection dropped in the middle of a blob, an upload refused half-way),
// up to the policy's retries. what names the operation in warnings.
func (c *Client) retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	for attempt := 0; ; attempt++ {
		octx, state := withOpState(ctx)
		err := op(octx)
		if err == nil || !transient(err) {
			return err
		}
		if state.exhausted.Load() || attempt >= c.policy.retries {
			if c.policy.retries == 0 {
				return err
			}
			return &gaveUpError{retries: c.policy.retries, err: err}
		}
		c.warnf("%s: %s; retrying", what, reason(err))
		if err := sleep(ctx, c.policy.wait(attempt, nil)); err != nil {
			return err
		}
	}
}
