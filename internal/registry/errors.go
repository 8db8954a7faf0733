package registry

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Error is a registry failure explained for a user: what kiln was doing, with which
// reference, what the registry (or the network) said, and what to do about it. Its message
// is one line.
type Error struct {
	// Op says what kiln was doing: "pulling", "pushing", "checking push access to", ...
	Op string
	// Ref is the reference (or registry host) concerned.
	Ref string
	// Host is the registry host that answered (or did not).
	Host string
	// Status is the HTTP status the registry answered, 0 when it did not answer.
	Status int
	// Reason is what went wrong, in the registry's words where it gave some.
	Reason string
	// Fix is what the user can do, or "".
	Fix string
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.Op, e.Ref, e.Reason)
	if e.Fix != "" {
		s += "; " + e.Fix
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// explain turns err from an operation on ref at host into an *Error. authenticated says
// whether credentials were sent, to tell "log in" from "check the password".
func explain(err error, op, ref, host string, authenticated bool) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{Op: op, Ref: ref, Host: host, Err: err}
	var terr *transport.Error
	var unknownCA x509.UnknownAuthorityError
	var unknownCAPtr *x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var plain *plainHTTPError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &plain), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"),
		strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
		e.Reason = fmt.Sprintf("%s speaks plain HTTP, not HTTPS", host)
		e.Fix = fmt.Sprintf("if that is intended, pass --insecure-registry %s", host)
	case errors.As(err, &unknownCA), errors.As(err, &unknownCAPtr):
		e.Reason = fmt.Sprintf("the TLS certificate of %s is signed by an unknown authority", host)
		e.Fix = fmt.Sprintf("pass --registry-ca %s=CA.pem with the CA that signed it (or --insecure-registry %s to skip verification)", host, host)
	case errors.As(err, &hostErr):
		e.Reason = fmt.Sprintf("the TLS certificate of %s is not valid for that name (%v)", host, hostErr)
		e.Fix = "reach the registry by a name its certificate lists"
	case errors.As(err, &invalid):
		e.Reason = fmt.Sprintf("the TLS certificate of %s is not valid (%v)", host, invalid)
		e.Fix = "fix the registry's certificate (or pass --insecure-registry " + host + " to skip verification)"
	case strings.Contains(err.Error(), "tls: certificate required"), strings.Contains(err.Error(), "tls: bad certificate"):
		e.Reason = fmt.Sprintf("%s requires a client certificate it trusts", host)
		e.Fix = fmt.Sprintf("pass --registry-client-cert %s=CERT.pem,KEY.pem", host)
	case errors.As(err, &terr):
		e.Status = terr.StatusCode
		e.Reason = fmt.Sprintf("%s answered %d %s%s", host, terr.StatusCode, http.StatusText(terr.StatusCode), diagnostics(terr))
		e.Fix = statusFix(terr, op, host, authenticated)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		e.Reason = fmt.Sprintf("no such host %s", dnsErr.Name)
		e.Fix = "check the registry name"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Reason = fmt.Sprintf("cannot connect to %s (connection refused)", host)
		e.Fix = "check that the registry runs and the host and port are right"
	default:
		e.Reason = reason(err)
	}
	var gaveUp *gaveUpError
	if errors.As(err, &gaveUp) {
		if !strings.Contains(e.Reason, "gave up after") {
			e.Reason += fmt.Sprintf(" (gave up after %d retries)", gaveUp.retries)
		}
		if e.Fix == "" {
			e.Fix = "the registry or the network keeps failing; try again later or raise --retry"
		}
	}
	return e
}

// diagnostics formats the registry's own error codes and messages, without their details.
func diagnostics(terr *transport.Error) string {
	var parts []string
	for _, d := range terr.Errors {
		s := string(d.Code)
		if d.Message != "" {
			s += ": " + d.Message
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + oneLine(strings.Join(parts, "; ")) + ")"
}

// statusFix suggests what to do about a registry's refusal.
func statusFix(terr *transport.Error, op, host string, authenticated bool) string {
	switch terr.StatusCode {
	case http.StatusUnauthorized:
		if authenticated {
			return fmt.Sprintf("the user or password is wrong: log in again with kiln login %s", host)
		}
		return fmt.Sprintf("no credentials for %s: log in with kiln login %s", host, host)
	case http.StatusForbidden:
		return "the account has no access to this repository for " + strings.TrimSuffix(op, "ing") + "ing"
	case http.StatusNotFound:
		if strings.HasPrefix(op, "downloading layer") {
			return "the registry does not hold this layer (any more)"
		}
		return "check the repository name and tag"
	case http.StatusTooManyRequests:
		return "the registry is rate-limiting; wait, log in for a higher limit, or raise --retry"
	}
	if retryableStatus(terr.StatusCode) {
		return "the registry is failing; try again later or raise --retry"
	}
	return ""
}

// reason is err in few words: a failed request is named by its method and path, without
// the query (upload URLs carry long state tokens) or the scheme and host.
func reason(err error) string {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		path := uerr.URL
		if u, perr := url.Parse(uerr.URL); perr == nil {
			path = u.Path
		}
		s := fmt.Sprintf("%s %s: %s", strings.ToUpper(uerr.Op), path, oneLine(uerr.Err.Error()))
		var gaveUp *gaveUpError
		if errors.As(err, &gaveUp) {
			s += fmt.Sprintf(" (gave up after %d retries)", gaveUp.retries)
		}
		return s
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return fmt.Sprintf("%d %s%s", terr.StatusCode, http.StatusText(terr.StatusCode), diagnostics(terr))
	}
	return oneLine(err.Error())
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
