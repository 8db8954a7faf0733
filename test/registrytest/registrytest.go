// Package registrytest starts real container registries for tests: Debian's
// docker-registry (the CNCF distribution registry 2.8) on a free port, with
// TLS from a CA generated for it, htpasswd auth, bearer-token auth from a
// token server run in the test process, or mutual TLS. It also builds a
// docker credential helper (test/credhelper) for tests of credential stores.
//
// A test calls Start with the Options it needs and gets a running Registry
// that is stopped, and whose log is shown if the test failed, when the test
// ends. Start skips the test, saying what to install, when docker-registry
// or htpasswd is missing.
package registrytest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options say what kind of registry Start runs.
type Options struct {
	// TLS serves HTTPS with a certificate from a CA generated for this
	// registry (Registry.CAFile).
	TLS bool
	// Users are the accepted users and their passwords. Without Token they
	// go into an htpasswd file; empty means no auth at all.
	Users map[string]string
	// Token makes the registry require bearer tokens from a token server run
	// in the test process (docker's token protocol, ES256-signed JWTs). The
	// token server grants any valid user from Users what it asks for, grants
	// anonymous clients nothing and refuses bad credentials. It serves HTTPS
	// with a certificate from the registry's CA when TLS is set, else HTTP.
	// Its realm is on another host:port than the registry (localhost:PORT
	// for a loopback registry), so a client that skips certificate checks
	// only for Host must still trust CAFile to fetch tokens.
	Token bool
	// ClientCerts makes the registry require client certificates signed by a
	// CA generated for it (Registry.ClientCert and ClientKey hold one). It
	// needs TLS.
	ClientCerts bool
	// Hosts are extra DNS names or IP addresses for the server certificate;
	// 127.0.0.1, ::1, localhost and the listen IP are always in it.
	Hosts []string
	// Addr is the listen address, "IP:port". The default is a free port on
	// 127.0.0.1; port 0 means a free port on that IP.
	Addr string
}

// Registry is a running docker-registry.
type Registry struct {
	// Host is host:port as clients should address the registry.
	Host string
	// Dir holds the registry's configuration, data (Dir/data), log
	// (Dir/registry.log) and certificates.
	Dir string
	// CAFile is the PEM certificate of the CA that signed the server
	// certificate (TLS only).
	CAFile string
	// ClientCert and ClientKey are PEM files of a client certificate the
	// registry accepts (ClientCerts only).
	ClientCert, ClientKey string

	useTLS   bool
	ca       *authority        // signs server certificates (TLS only)
	roots    *x509.CertPool    // holds ca's certificate (TLS only)
	client   []tls.Certificate // presented by Transport (ClientCerts only)
	token    *tokenServer      // nil without Options.Token
	logFile  string
	proc     *process
	stopOnce sync.Once
}

// registryBinary is where Debian's docker-registry package installs it.
const registryBinary = "/usr/bin/docker-registry"

// readyTimeout bounds how long Start and WaitReady wait for an answer.
const readyTimeout = 30 * time.Second

// Start runs a registry configured by o and waits until it answers. The
// registry is stopped when the test ends, and its log is shown if the test
// failed. Start skips the test when docker-registry (or, for htpasswd
// auth, htpasswd) is not installed.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		if _, statErr := os.Stat(registryBinary); statErr != nil {
			t.Skipf("registrytest: the real registry, docker-registry, is not installed (%v); remedy: apt-get install -y docker-registry", err)
		}
		bin = registryBinary
	}
	if o.ClientCerts && !o.TLS {
		t.Fatalf("registrytest: Options.ClientCerts needs Options.TLS")
	}
	ip, port, err := splitAddr(o.Addr)
	if err != nil {
		t.Fatalf("registrytest: Options.Addr: %v", err)
	}
	r := &Registry{Dir: t.TempDir(), useTLS: o.TLS}
	r.logFile = filepath.Join(r.Dir, "registry.log")
	config := registryConfig{dir: r.Dir, secret: randomHex(t)}
	if o.TLS {
		r.setUpTLS(t, ip, o, &config)
	}
	switch {
	case o.Token:
		config.tokenCA = filepath.Join(r.Dir, "token-ca.pem")
		var caForTLS *authority
		if o.TLS {
			caForTLS = r.ca
		}
		r.token, err = startTokenServer(ip, maps.Clone(o.Users), config.tokenCA, caForTLS)
		if err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		config.tokenRealm = r.token.realm
	case len(o.Users) > 0:
		config.htpasswd = filepath.Join(r.Dir, "htpasswd")
		writeHtpasswd(t, config.htpasswd, o.Users)
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			r.showLog(t)
		}
	})

	// Another process may take a free port between FreeAddr and the
	// registry's bind; then try again with another one.
	for attempt := 1; ; attempt++ {
		listen := net.JoinHostPort(ip, port)
		if port == "0" {
			listen = FreeAddr(t, ip)
		}
		config.addr = listen
		r.Host = clientHost(listen)
		if err := config.write(); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		r.proc, err = startProcess(bin, config.file(), r.logFile)
		if err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		err = waitUp(&http.Client{Transport: r.Transport(), Timeout: 5 * time.Second}, r.URL()+"/v2/", r.proc.exited)
		if err == nil {
			return r
		}
		r.proc.stop()
		if port != "0" || attempt == 3 || !r.logContains("address already in use") {
			t.Fatalf("registrytest: starting docker-registry on %s: %v (its log follows when the test ends)", listen, err)
		}
	}
}

// setUpTLS generates the registry's CA, server certificate and, for
// ClientCerts, the client CA and a client certificate.
func (r *Registry) setUpTLS(t testing.TB, ip string, o Options, config *registryConfig) {
	t.Helper()
	var err error
	if r.ca, err = newAuthority("kiln test registry CA"); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	r.CAFile = filepath.Join(r.Dir, "ca.pem")
	if err := writeFile(r.CAFile, r.ca.certPEM(), 0o644); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	r.roots = x509.NewCertPool()
	r.roots.AddCert(r.ca.cert)
	server, err := r.ca.issue(serverTemplate("kiln test registry", append([]string{ip}, o.Hosts...)))
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	config.cert, config.key = filepath.Join(r.Dir, "cert.pem"), filepath.Join(r.Dir, "key.pem")
	if err := server.write(config.cert, config.key); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if !o.ClientCerts {
		return
	}
	clientCA, err := newAuthority("kiln test client CA")
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	config.clientCA = filepath.Join(r.Dir, "client-ca.pem")
	if err := writeFile(config.clientCA, clientCA.certPEM(), 0o644); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	client, err := clientCA.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kiln test client", Organization: []string{"kiln tests"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	r.ClientCert, r.ClientKey = filepath.Join(r.Dir, "client-cert.pem"), filepath.Join(r.Dir, "client-key.pem")
	if err := client.write(r.ClientCert, r.ClientKey); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	r.client = []tls.Certificate{client.tlsCert()}
}

// writeHtpasswd writes users to path with bcrypt hashes (the only kind
// distribution accepts), made by Apache's htpasswd.
func writeHtpasswd(t testing.TB, path string, users map[string]string) {
	t.Helper()
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Skipf("registrytest: htpasswd is not installed (%v); remedy: apt-get install -y apache2-utils", err)
	}
	var lines []byte
	for user, pass := range users {
		out, err := exec.Command(htpasswd, "-Bbn", user, pass).Output()
		if err != nil {
			t.Fatalf("registrytest: hashing the password of %q with htpasswd: %v", user, err)
		}
		lines = append(lines, strings.TrimSpace(string(out))+"\n"...)
	}
	if err := writeFile(path, lines, 0o600); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
}

// URL is the registry's base URL, "https://host:port" or "http://host:port".
func (r *Registry) URL() string {
	if r.useTLS {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// Transport returns a new transport that trusts the registry's CA (and the
// token server's certificate, which the same CA signed) and, with
// ClientCerts, presents the client certificate.
func (r *Registry) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.useTLS {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.roots, Certificates: r.client}
	}
	return tr
}

// TokenScopes returns every scope requested from the token server so far,
// in the order they were asked for, whether or not a token was granted. It
// is nil without Options.Token.
func (r *Registry) TokenScopes() []string {
	if r.token == nil {
		return nil
	}
	return r.token.requested()
}

// Stop stops the registry (and its token server) now rather than when the
// test ends, e.g. to test an unreachable origin. It may be called any number
// of times.
func (r *Registry) Stop() {
	r.stopOnce.Do(func() {
		if r.proc != nil {
			r.proc.stop()
		}
		if r.token != nil {
			r.token.close()
		}
	})
}

// showLog logs the end of the registry's log.
func (r *Registry) showLog(t testing.TB) {
	t.Helper()
	data, err := os.ReadFile(r.logFile)
	if err != nil {
		t.Logf("registrytest: reading the docker-registry log: %v", err)
		return
	}
	const max = 64 << 10
	if len(data) > max {
		data = append([]byte("[...]\n"), data[len(data)-max:]...)
	}
	t.Logf("registrytest: docker-registry log (%s):\n%s", r.logFile, data)
}

func (r *Registry) logContains(s string) bool {
	data, _ := os.ReadFile(r.logFile)
	return strings.Contains(string(data), s)
}

// FreeAddr returns "ip:port" with a port nobody listens on right now
// (ip "" means 127.0.0.1).
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("registrytest: finding a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WaitReady polls url with client until any HTTP response comes back (a
// 401 counts: the server is up), and fails the test if none does within
// 30 seconds.
func WaitReady(t testing.TB, client *http.Client, url string) {
	t.Helper()
	if err := waitUp(client, url, nil); err != nil {
		t.Fatalf("registrytest: waiting for %s to answer: %v", url, err)
	}
}

// waitUp polls url until it answers, the timeout passes or exited closes.
func waitUp(client *http.Client, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %v: %w", readyTimeout, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("docker-registry exited before it answered (last error: %w)", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// splitAddr splits Options.Addr into an IP and a port ("0" for a free one).
func splitAddr(addr string) (ip, port string, err error) {
	if addr == "" {
		return "127.0.0.1", "0", nil
	}
	ip, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("parsing %q: %w", addr, err)
	}
	if net.ParseIP(ip) == nil {
		return "", "", fmt.Errorf("%q: want an IP address, not %q", addr, ip)
	}
	if port == "" {
		port = "0"
	}
	return ip, port, nil
}

// clientHost is how clients reach a registry listening on listen: an
// unspecified IP (0.0.0.0, ::) is reached on loopback.
func clientHost(listen string) string {
	ip, port, _ := net.SplitHostPort(listen)
	if parsed := net.ParseIP(ip); parsed != nil && parsed.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

func randomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("registrytest: drawing the registry's HTTP secret: %v", err)
	}
	return hex.EncodeToString(b)
}

// registryConfig is what goes into docker-registry's configuration file.
type registryConfig struct {
	dir, addr, secret string
	cert, key         string // TLS
	clientCA          string // mTLS
	htpasswd          string // htpasswd auth
	tokenRealm        string // token auth
	tokenCA           string // token auth: the rootcertbundle
}

func (c *registryConfig) file() string { return filepath.Join(c.dir, "config.yml") }

// write writes the configuration as JSON, which YAML parsers read too and
// which needs no quoting rules for odd characters in paths.
func (c *registryConfig) write() error {
	httpCfg := map[string]any{"addr": c.addr, "secret": c.secret}
	if c.cert != "" {
		tlsCfg := map[string]any{"certificate": c.cert, "key": c.key}
		if c.clientCA != "" {
			tlsCfg["clientcas"] = []string{c.clientCA}
		}
		httpCfg["tls"] = tlsCfg
	}
	cfg := map[string]any{
		"version": "0.1",
		"log":     map[string]any{"level": "info", "formatter": "text"},
		"storage": map[string]any{
			"filesystem":  map[string]any{"rootdirectory": filepath.Join(c.dir, "data")},
			"delete":      map[string]any{"enabled": true},
			"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
		},
		"http": httpCfg,
	}
	switch {
	case c.tokenRealm != "":
		cfg["auth"] = map[string]any{"token": map[string]any{
			"realm": c.tokenRealm, "service": tokenService, "issuer": tokenIssuer, "rootcertbundle": c.tokenCA,
		}}
	case c.htpasswd != "":
		cfg["auth"] = map[string]any{"htpasswd": map[string]any{"realm": "kiln-test", "path": c.htpasswd}}
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the docker-registry configuration: %w", err)
	}
	return writeFile(c.file(), data, 0o600)
}

// process is a running docker-registry.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been waited for
	release chan struct{} // closed to let the thread that started it exit
	once    sync.Once
}

// startProcess starts docker-registry with config, its output appended to
// logFile. The process gets SIGKILL when the test binary dies (say on a
// test timeout) so it never outlives the tests: Pdeathsig fires when the
// starting thread ends, so the start happens on a locked thread that lives
// until stop.
func startProcess(bin, config, logFile string) (*process, error) {
	log, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the registry log: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = registryEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, exited: make(chan struct{}), release: make(chan struct{})}
	started := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		err := cmd.Start()
		started <- err
		if err == nil {
			<-p.release
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop kills the process and waits for it.
func (p *process) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
		}
		close(p.release)
	})
}

// registryEnv is the test's environment without REGISTRY_* variables, which
// would override docker-registry's configuration file.
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}
