package registry

import (
	"crypto/tls"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// hostTransport sends requests for insecure hosts through a transport that
// skips certificate verification and everything else through the verifying
// default transport. Plain HTTP needs no special transport: the scheme is
// chosen from the reference (see Client.parse).
type hostTransport struct {
	insecure   map[string]bool
	verified   http.RoundTripper
	unverified http.RoundTripper
}

// newTransport returns the base transport of a Client.
func newTransport(insecure map[string]bool) http.RoundTripper {
	if len(insecure) == 0 {
		return remote.DefaultTransport
	}
	unverified := remote.DefaultTransport.(*http.Transport).Clone()
	unverified.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only for hosts the user named insecure
	return &hostTransport{insecure: insecure, verified: remote.DefaultTransport, unverified: unverified}
}

// RoundTrip implements http.RoundTripper.
func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.insecure[req.URL.Host] {
		return t.unverified.RoundTrip(req)
	}
	return t.verified.RoundTrip(req)
}
