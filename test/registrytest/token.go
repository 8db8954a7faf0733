package registrytest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Token auth (https://distribution.github.io/distribution/spec/auth/token/):
// the registry answers an unauthenticated request with
//
//	WWW-Authenticate: Bearer realm="<token server>",service="<service>",scope="repository:NAME:pull"
//
// the client asks the token server for a token (GET realm?service=..&scope=..,
// with basic auth), and the registry verifies the token's signature against
// its rootcertbundle. These are the names both sides are configured with.
const (
	tokenService  = "kiln-test-registry"
	tokenIssuer   = "kiln-test-token-server"
	tokenLifetime = 300 // seconds
)

// tokenServer issues JWTs for the docker token protocol. It grants every
// action a valid user asks for, none to anonymous clients, and refuses bad
// credentials.
type tokenServer struct {
	srv   *httptest.Server
	realm string
	users map[string]string // user -> password; read-only once serving
	key   *ecdsa.PrivateKey // signs tokens; its certificate is x5c[0]
	x5c   []string          // the signing certificate chain, base64 DER

	mu     sync.Mutex
	scopes []string // every scope requested, in order
}

// accessEntry is one grant in a token's "access" claim.
type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// claims is a registry token's JWT claim set.
type claims struct {
	Issuer     string        `json:"iss"`
	Subject    string        `json:"sub"`
	Audience   string        `json:"aud"`
	Expiration int64         `json:"exp"`
	NotBefore  int64         `json:"nbf"`
	IssuedAt   int64         `json:"iat"`
	JWTID      string        `json:"jti"`
	Access     []accessEntry `json:"access"`
}

// startTokenServer generates the token-signing CA (written to caFile, the
// registry's rootcertbundle) and a signing certificate, and starts the token
// server on ip. With tlsCA set it serves HTTPS with a certificate from
// tlsCA, else plain HTTP. The realm names the server "localhost" when ip is
// a loopback address: go-containerregistry refuses realms that are loopback
// or private IP literals (an SSRF guard) unless they equal the registry's
// host:port.
func startTokenServer(ip string, users map[string]string, caFile string, tlsCA *authority) (*tokenServer, error) {
	ca, err := newAuthority("kiln test token CA")
	if err != nil {
		return nil, fmt.Errorf("starting the token server: %w", err)
	}
	signer, err := ca.issue(&x509.Certificate{
		Subject:  pkix.Name{CommonName: "kiln test token signer", Organization: []string{"kiln tests"}},
		KeyUsage: x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the token server: %w", err)
	}
	if err := writeFile(caFile, ca.certPEM(), 0o644); err != nil {
		return nil, fmt.Errorf("starting the token server: %w", err)
	}
	s := &tokenServer{
		users: users,
		key:   signer.key,
		x5c: []string{
			base64.StdEncoding.EncodeToString(signer.der),
			base64.StdEncoding.EncodeToString(ca.cert.Raw),
		},
	}
	listenIP, realmHost := ip, ip
	if parsed := net.ParseIP(ip); parsed == nil || parsed.IsLoopback() || parsed.IsUnspecified() {
		listenIP, realmHost = "127.0.0.1", "localhost"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(listenIP, "0"))
	if err != nil {
		return nil, fmt.Errorf("starting the token server: listening on %s: %w", listenIP, err)
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Listener.Close()
	s.srv.Listener = l
	scheme := "http"
	if tlsCA != nil {
		pair, err := tlsCA.issue(serverTemplate("kiln test token server", []string{listenIP}))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("starting the token server: %w", err)
		}
		s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair.tlsCert()}}
		s.srv.StartTLS()
		scheme = "https"
	} else {
		s.srv.Start()
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	s.realm = scheme + "://" + net.JoinHostPort(realmHost, port) + "/token"
	return s, nil
}

// close stops the server.
func (s *tokenServer) close() { s.srv.Close() }

// requested returns a copy of the scopes requested so far.
func (s *tokenServer) requested() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.scopes...)
}

// ServeHTTP implements the token endpoint.
func (s *tokenServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/token" {
		tokenError(w, http.StatusNotFound, "NOT_FOUND", "the token endpoint is /token")
		return
	}
	if req.Method != http.MethodGet {
		// The OAuth2 POST flow is optional; clients fall back to GET on 404.
		tokenError(w, http.StatusNotFound, "UNSUPPORTED", "this token server implements GET only, not the OAuth2 POST flow")
		return
	}
	q := req.URL.Query()
	var scopes []string
	for _, v := range q["scope"] {
		scopes = append(scopes, strings.Fields(v)...) // OAuth2 allows space-separated scopes
	}
	s.mu.Lock()
	s.scopes = append(s.scopes, scopes...)
	s.mu.Unlock()

	if svc := q.Get("service"); svc != "" && svc != tokenService {
		tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf("unknown service %q, this server issues tokens for %q", svc, tokenService))
		return
	}
	access := []accessEntry{}
	for _, scope := range scopes {
		entry, err := parseScope(scope)
		if err != nil {
			tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
			return
		}
		access = append(access, entry)
	}
	subject := ""
	if user, pass, ok := req.BasicAuth(); ok {
		want, known := s.users[user]
		if !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="kiln-test-token"`)
			tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication failed: bad username or password")
			return
		}
		subject = user
	} else if req.Header.Get("Authorization") != "" {
		tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication failed: only basic auth is accepted")
		return
	} else {
		access = []accessEntry{} // anonymous: a valid token that grants nothing
	}

	now := time.Now()
	token, err := s.sign(claims{
		Issuer:     tokenIssuer,
		Subject:    subject,
		Audience:   tokenService,
		Expiration: now.Unix() + tokenLifetime,
		NotBefore:  now.Unix() - 1,
		IssuedAt:   now.Unix(),
		Access:     access,
	})
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token":        token,
		"access_token": token,
		"expires_in":   tokenLifetime,
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}

// parseScope parses "type:name:actions", where name may hold colons (a
// registry host with a port, say) and actions is a comma-separated list.
func parseScope(scope string) (accessEntry, error) {
	typ, rest, ok := strings.Cut(scope, ":")
	i := strings.LastIndex(rest, ":")
	if !ok || typ == "" || i <= 0 {
		return accessEntry{}, fmt.Errorf("malformed scope %q, want type:name:actions", scope)
	}
	entry := accessEntry{Type: typ, Name: rest[:i], Actions: []string{}}
	for _, a := range strings.Split(rest[i+1:], ",") {
		if a != "" {
			entry.Actions = append(entry.Actions, a)
		}
	}
	return entry, nil
}

// sign returns c as a compact JWS signed with ES256, its x5c header holding
// the signing certificate chain.
func (s *tokenServer) sign(c claims) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("signing a token: drawing its ID: %w", err)
	}
	c.JWTID = hex.EncodeToString(jti)
	header, err := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": s.x5c})
	if err != nil {
		return "", fmt.Errorf("signing a token: encoding its header: %w", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("signing a token: encoding its claims: %w", err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("signing a token: %w", err)
	}
	// JWS ES256 (RFC 7518 3.4): R and S, each as 32 big-endian bytes.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig), nil
}

// tokenError writes an error in the registry API's JSON error format, which
// clients such as go-containerregistry show.
func tokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg}},
	})
}
