package faultproxy

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Kind is a kind of fault a Rule injects.
type Kind int

// The kinds of fault.
const (
	// Status answers with Rule.Status and an OCI-style JSON error body, and, when
	// Rule.RetryAfter is set, a Retry-After header. The request is not forwarded.
	Status Kind = iota + 1
	// Reset closes the client connection abruptly (TCP RST where possible) without
	// answering. The request is not forwarded.
	Reset
	// DropResponseBody forwards the request, sends the response headers and at most
	// Rule.Bytes bytes of the response body, then closes the client connection. The
	// client never receives the whole body: for a body of known length the cut comes
	// one byte before its end at the latest, and a chunked body never gets its final
	// chunk. A negative Rule.Bytes, or a response without a body, cuts the connection
	// before the response headers, after the upstream has handled the request.
	DropResponseBody
	// DropRequestBody forwards the request while reading its body, and after
	// Rule.Bytes bytes of it cancels the upstream request and closes the client
	// connection. The upstream never receives the whole body (for a body of known
	// length it gets one byte less at most), so nothing it commits can look complete.
	// A request without a body is cut without being forwarded.
	DropRequestBody
	// Stall forwards the request, sends the response headers and Rule.Bytes bytes
	// of the response body, then sends nothing for Rule.Delay before going on, or,
	// with Rule.Hang, until the client gives up or the proxy closes. As with
	// DropResponseBody the stall comes before the end of the body; a negative
	// Rule.Bytes, or a response without a body, stalls before the response headers.
	Stall
)

// String names the kind as it appears in Request.Fault.
func (k Kind) String() string {
	switch k {
	case Status:
		return "status"
	case Reset:
		return "reset"
	case DropResponseBody:
		return "drop-response-body"
	case DropRequestBody:
		return "drop-request-body"
	case Stall:
		return "stall"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Rule describes a fault and the requests it applies to.
//
// Every rule counts the requests it matches, whether or not another rule applied to
// them: a rule applies to matching requests number After+1 to After+Times (all from
// After+1 on when Times is 0). When several rules are due for a request, the one added
// first applies.
type Rule struct {
	// Name is what Request.Fault shows for requests this rule applied to; the
	// default is Kind.String().
	Name string
	// Method matches the request method (case-insensitively); empty matches any.
	Method string
	// Path is a regular expression searched for in the request's URL path, such as
	// `/blobs/sha256:`, `/manifests/` or `/blobs/uploads/`; empty matches any path.
	Path string
	// Times is how many matching requests the fault applies to; 0 means every one
	// (a permanent fault).
	Times int
	// After is how many matching requests are let through before the fault applies.
	After int

	// Kind is the fault to inject.
	Kind Kind
	// Status is the HTTP status a Status fault answers with (200-599).
	Status int
	// Code is the OCI error code in a Status fault's body; the default depends on
	// Status (UNAVAILABLE for 503, TOOMANYREQUESTS for 429, UNKNOWN for other 5xx...).
	Code string
	// RetryAfter, when positive, is sent with a Status fault as a Retry-After header
	// in whole seconds, rounded up.
	RetryAfter time.Duration
	// Bytes is where DropResponseBody, DropRequestBody and Stall act, in bytes of
	// the body.
	Bytes int64
	// Delay is how long a Stall lasts.
	Delay time.Duration
	// Hang makes a Stall last until the client gives up or the proxy closes.
	Hang bool
}

// name is what Request.Fault shows for the rule.
func (r *Rule) name() string {
	if r.Name != "" {
		return r.Name
	}
	return r.Kind.String()
}

// check reports what is wrong with the rule, if anything.
func (r *Rule) check() error {
	switch {
	case r.Kind < Status || r.Kind > Stall:
		return fmt.Errorf("unknown kind %v", r.Kind)
	case r.Times < 0 || r.After < 0:
		return fmt.Errorf("negative Times (%d) or After (%d)", r.Times, r.After)
	case r.Kind == Status && (r.Status < 200 || r.Status > 599):
		return fmt.Errorf("status fault needs a Status in 200-599, got %d", r.Status)
	case r.Kind == DropRequestBody && r.Bytes < 0:
		return fmt.Errorf("drop-request-body fault needs Bytes >= 0, got %d", r.Bytes)
	case r.Kind == Stall && !r.Hang && r.Delay <= 0:
		return fmt.Errorf("stall fault needs a positive Delay or Hang")
	}
	return nil
}

// rule is a Rule as the proxy keeps it.
type rule struct {
	Rule
	path *regexp.Regexp
	seen int // matching requests so far
}

// matches tells whether the rule matches a request.
func (r *rule) matches(req *http.Request) bool {
	if r.Method != "" && !strings.EqualFold(r.Method, req.Method) {
		return false
	}
	return r.path.MatchString(req.URL.Path)
}

// due counts a matching request and tells whether the fault applies to it.
func (r *rule) due() bool {
	r.seen++
	if r.seen <= r.After {
		return false
	}
	return r.Times == 0 || r.seen <= r.After+r.Times
}

// errorCode is the OCI error code a Status fault sends by default.
func errorCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "UNSUPPORTED"
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusForbidden:
		return "DENIED"
	case http.StatusNotFound:
		return "NAME_UNKNOWN"
	case http.StatusMethodNotAllowed:
		return "UNSUPPORTED"
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	}
	return "UNKNOWN"
}
