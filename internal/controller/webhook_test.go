package controller

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

const (
	testHookSecret = "hook-s3cret-value"
	testCommit     = "0123456789abcdef0123456789abcdef01234567"
)

// sign is the X-Hub-Signature-256 of body with secret.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// pushEvent is a GitHub push event's JSON.
func pushEvent(ref, commit string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ref": ref, "before": strings.Repeat("0", 40), "after": commit,
		"head_commit": map[string]any{"id": commit},
		"repository":  map[string]any{"full_name": "example/app", "default_branch": "main"},
	})
	return b
}

// hookResult is a webhook's answer.
type hookResult struct {
	status int
	reply  webhookReply
	raw    string
}

// post delivers body to path on srv with headers (name, value pairs).
func post(t *testing.T, srv *httptest.Server, method, path string, body []byte, headers ...string) hookResult {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := hookResult{status: resp.StatusCode, raw: string(raw)}
	if err := json.Unmarshal(raw, &res.reply); err != nil {
		t.Errorf("%s %s: the answer is not JSON: %q", method, path, raw)
	}
	return res
}

// lastVersion is the number of builds the BuildConfig started.
func (c *cluster) lastVersion(t *testing.T, ns, name string) int64 {
	t.Helper()
	var bc kilnv1.BuildConfig
	if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &bc); err != nil {
		t.Fatal(err)
	}
	return bc.Status.LastVersion
}

// build reads a build.
func (c *cluster) build(t *testing.T, ns, name string) *kilnv1.Build {
	t.Helper()
	var b kilnv1.Build
	if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &b); err != nil {
		t.Fatalf("reading build %s: %v", name, err)
	}
	return &b
}

// syncBuffer is a log sink's buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// add appends a line.
func (s *syncBuffer) add(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(line + "\n")
}

// String returns the lines so far.
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWebhooks(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ns := c.namespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook"},
		Data: map[string][]byte{WebhookSecretKey: []byte(testHookSecret)}}
	if err := c.client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel)
	bc.Spec.Source.Git = &kilnv1.GitSource{URI: "https://github.com/example/app.git", Ref: "main"}
	bc.Spec.Triggers = []kilnv1.BuildTrigger{
		{Type: kilnv1.TriggerGitHub, GitHub: &kilnv1.WebhookTrigger{SecretName: "hook"}},
		{Type: kilnv1.TriggerGeneric, Generic: &kilnv1.WebhookTrigger{SecretName: "hook"}},
	}
	if err := c.client.Create(ctx, bc); err != nil {
		t.Fatal(err)
	}
	// A BuildConfig with a Generic trigger only, whose Secret lacks the key.
	other := buildConfig(ns, "other", kilnv1.RunPolicyParallel)
	other.Spec.Triggers = []kilnv1.BuildTrigger{{Type: kilnv1.TriggerGeneric, Generic: &kilnv1.WebhookTrigger{SecretName: "missing"}}}
	if err := c.client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	h := &WebhookHandler{Client: c.client, Secrets: c.client,
		Log: funcr.New(func(prefix, args string) { logs.add(prefix + " " + args) }, funcr.Options{})}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	github := "/webhooks/" + ns + "/app/github"
	generic := "/webhooks/" + ns + "/app/generic"

	t.Run("github push", func(t *testing.T) {
		body := pushEvent("refs/heads/main", testCommit)
		res := post(t, srv, http.MethodPost, github, body, "X-GitHub-Event", "push", "Content-Type", "application/json", signatureHeader, sign(testHookSecret, body))
		if res.status != http.StatusAccepted || res.reply.Build != "app-1" {
			t.Fatalf("answer %d %s", res.status, res.raw)
		}
		b := c.build(t, ns, "app-1")
		if got := b.Spec.TriggeredBy; len(got) != 1 || got[0].Message != "GitHub push" || got[0].Commit != testCommit || got[0].Ref != "refs/heads/main" {
			t.Errorf("triggeredBy %+v", got)
		}
		if b.Spec.Source.Git.Ref != testCommit {
			t.Errorf("the build checks out %q, not the pushed commit", b.Spec.Source.Git.Ref)
		}
	})

	t.Run("github push as a form", func(t *testing.T) {
		body := []byte(url.Values{"payload": {string(pushEvent("refs/heads/main", testCommit))}}.Encode())
		res := post(t, srv, http.MethodPost, github, body, "X-GitHub-Event", "push", "Content-Type", "application/x-www-form-urlencoded", signatureHeader, sign(testHookSecret, body))
		if res.status != http.StatusAccepted || res.reply.Build != "app-2" {
			t.Fatalf("answer %d %s", res.status, res.raw)
		}
		if got := c.build(t, ns, "app-2").Spec.TriggeredBy[0].Commit; got != testCommit {
			t.Errorf("commit %q", got)
		}
	})

	t.Run("github refused", func(t *testing.T) {
		before := c.lastVersion(t, ns, "app")
		body := pushEvent("refs/heads/main", testCommit)
		for name, headers := range map[string][]string{
			"wrong secret":      {signatureHeader, sign("not-the-secret", body)},
			"no signature":      nil,
			"not hex":           {signatureHeader, "sha256=zz"},
			"sha1 signature":    {"X-Hub-Signature", "sha1=0000"},
			"signature of null": {signatureHeader, sign(testHookSecret, nil)},
		} {
			res := post(t, srv, http.MethodPost, github, body, append(headers, "X-GitHub-Event", "push")...)
			if res.status != http.StatusUnauthorized {
				t.Errorf("%s: answer %d %s", name, res.status, res.raw)
			}
		}
		if after := c.lastVersion(t, ns, "app"); after != before {
			t.Errorf("refused deliveries started builds: lastVersion %d -> %d", before, after)
		}
		l := logs.String()
		if !strings.Contains(l, "refused a webhook delivery") || !strings.Contains(l, ns+"/app") || !strings.Contains(l, "127.0.0.1") {
			t.Errorf("the refusals were not logged with the BuildConfig and remote address:\n%s", l)
		}
		if strings.Contains(l, testHookSecret) {
			t.Errorf("the log shows the secret:\n%s", l)
		}
	})

	t.Run("github ignored", func(t *testing.T) {
		before := c.lastVersion(t, ns, "app")
		ping := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
		res := post(t, srv, http.MethodPost, github, ping, "X-GitHub-Event", "ping", signatureHeader, sign(testHookSecret, ping))
		if res.status != http.StatusOK || res.reply.Build != "" {
			t.Errorf("ping: answer %d %s", res.status, res.raw)
		}
		for _, ref := range []string{"refs/heads/feature", "refs/heads/main-2", "refs/tags/v1"} {
			body := pushEvent(ref, testCommit)
			res := post(t, srv, http.MethodPost, github, body, "X-GitHub-Event", "push", signatureHeader, sign(testHookSecret, body))
			if res.status != http.StatusOK || res.reply.Message != "ignored: push to other branch" {
				t.Errorf("push to %s: answer %d %s", ref, res.status, res.raw)
			}
		}
		deleted := []byte(`{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000","deleted":true}`)
		res = post(t, srv, http.MethodPost, github, deleted, "X-GitHub-Event", "push", signatureHeader, sign(testHookSecret, deleted))
		if res.status != http.StatusOK || !strings.HasPrefix(res.reply.Message, "ignored") {
			t.Errorf("deleted branch: answer %d %s", res.status, res.raw)
		}
		issues := []byte(`{"action":"opened"}`)
		res = post(t, srv, http.MethodPost, github, issues, "X-GitHub-Event", "issues", signatureHeader, sign(testHookSecret, issues))
		if res.status != http.StatusOK || !strings.HasPrefix(res.reply.Message, "ignored") {
			t.Errorf("issues event: answer %d %s", res.status, res.raw)
		}
		if after := c.lastVersion(t, ns, "app"); after != before {
			t.Errorf("ignored deliveries started builds: lastVersion %d -> %d", before, after)
		}
	})

	t.Run("generic", func(t *testing.T) {
		body := []byte(`{"git":{"commit":"` + testCommit + `","ref":"refs/heads/main"}}`)
		res := post(t, srv, http.MethodPost, generic+"?secret="+url.QueryEscape(testHookSecret), body, "Content-Type", "application/json")
		if res.status != http.StatusAccepted || res.reply.Build == "" {
			t.Fatalf("query secret: answer %d %s", res.status, res.raw)
		}
		b := c.build(t, ns, res.reply.Build)
		if got := b.Spec.TriggeredBy[0]; got.Message != "Generic webhook" || got.Commit != testCommit || got.Ref != "refs/heads/main" {
			t.Errorf("triggeredBy %+v", got)
		}
		if b.Spec.Source.Git.Ref != testCommit {
			t.Errorf("the build checks out %q, not the reported commit", b.Spec.Source.Git.Ref)
		}
		res = post(t, srv, http.MethodPost, generic, nil, signatureHeader, sign(testHookSecret, nil))
		if res.status != http.StatusAccepted || res.reply.Build == "" {
			t.Fatalf("signed, no body: answer %d %s", res.status, res.raw)
		}
		if got := c.build(t, ns, res.reply.Build).Spec.TriggeredBy[0]; got.Commit != "" || got.Message != "Generic webhook" {
			t.Errorf("triggeredBy %+v", got)
		}
		// A commit that is not an object name is recorded, not checked out.
		res = post(t, srv, http.MethodPost, generic+"?secret="+url.QueryEscape(testHookSecret), []byte(`{"git":{"commit":"--upload-pack=x"}}`))
		if res.status != http.StatusAccepted {
			t.Fatalf("odd commit: answer %d %s", res.status, res.raw)
		}
		if b := c.build(t, ns, res.reply.Build); b.Spec.Source.Git.Ref != "main" || b.Spec.TriggeredBy[0].Commit != "--upload-pack=x" {
			t.Errorf("odd commit: ref %q, triggeredBy %+v", b.Spec.Source.Git.Ref, b.Spec.TriggeredBy)
		}

		before := c.lastVersion(t, ns, "app")
		for name, path := range map[string]string{
			"wrong secret":    generic + "?secret=nope",
			"secret prefix":   generic + "?secret=" + url.QueryEscape(testHookSecret[:5]),
			"no secret":       generic,
			"secret too long": generic + "?secret=" + url.QueryEscape(testHookSecret+"x"),
		} {
			if res := post(t, srv, http.MethodPost, path, body); res.status != http.StatusUnauthorized {
				t.Errorf("%s: answer %d %s", name, res.status, res.raw)
			}
		}
		// A Secret without the key authenticates nothing.
		if res := post(t, srv, http.MethodPost, "/webhooks/"+ns+"/other/generic?secret=", nil); res.status != http.StatusUnauthorized {
			t.Errorf("empty secret: answer %d %s", res.status, res.raw)
		}
		if res := post(t, srv, http.MethodPost, "/webhooks/"+ns+"/other/generic?secret=x", nil); res.status != http.StatusUnauthorized {
			t.Errorf("missing Secret: answer %d %s", res.status, res.raw)
		}
		if res := post(t, srv, http.MethodPost, generic+"?secret="+url.QueryEscape(testHookSecret), []byte("{not json")); res.status != http.StatusBadRequest {
			t.Errorf("bad body: answer %d %s", res.status, res.raw)
		}
		if after := c.lastVersion(t, ns, "app"); after != before {
			t.Errorf("refused deliveries started builds: lastVersion %d -> %d", before, after)
		}
	})

	t.Run("errors", func(t *testing.T) {
		secretQuery := "?secret=" + url.QueryEscape(testHookSecret)
		for _, tc := range []struct {
			method, path string
			body         []byte
			status       int
		}{
			{http.MethodPost, "/webhooks/" + ns + "/nope/generic" + secretQuery, nil, http.StatusNotFound},
			{http.MethodPost, "/webhooks/" + ns + "/app/gitlab" + secretQuery, nil, http.StatusNotFound},
			{http.MethodPost, "/webhooks/" + ns + "/other/github", nil, http.StatusNotFound},
			{http.MethodPost, "/webhooks/" + ns + "/app", nil, http.StatusNotFound},
			{http.MethodPost, "/webhooks/" + ns + "/app/generic/extra", nil, http.StatusNotFound},
			{http.MethodPost, "/elsewhere", nil, http.StatusNotFound},
			{http.MethodGet, generic + secretQuery, nil, http.StatusMethodNotAllowed},
			{http.MethodPut, github, nil, http.StatusMethodNotAllowed},
			{http.MethodPost, generic + secretQuery, bytes.Repeat([]byte(" "), webhookBodyLimit+1), http.StatusRequestEntityTooLarge},
		} {
			if res := post(t, srv, tc.method, tc.path, tc.body); res.status != tc.status {
				t.Errorf("%s %s: answer %d %s, want %d", tc.method, tc.path, res.status, res.raw, tc.status)
			}
		}
	})
}

// TestWebhookServer serves the webhooks through SetupTriggers and a running manager.
func TestWebhookServer(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	ns := c.namespace(t)
	if err := c.client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hook"},
		Data: map[string][]byte{WebhookSecretKey: []byte(testHookSecret)}}); err != nil {
		t.Fatal(err)
	}
	bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel)
	bc.Spec.Triggers = []kilnv1.BuildTrigger{{Type: kilnv1.TriggerGeneric, Generic: &kilnv1.WebhookTrigger{SecretName: "hook"}}}
	if err := c.client.Create(ctx, bc); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	mgr := c.newManager(t)
	if err := SetupTriggers(mgr, TriggerOptions{WebhookBindAddress: addr, Registry: unreachableRegistry{}}); err != nil {
		t.Fatal(err)
	}
	run(t, mgr)

	hook := fmt.Sprintf("http://%s/webhooks/%s/app/generic?secret=%s", addr, ns, url.QueryEscape(testHookSecret))
	var reply webhookReply
	eventually(t, "the webhook server to start a build", func() error {
		resp, err := http.Post(hook, "application/json", nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("answer %s", resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(&reply)
	})
	if reply.Build != "app-1" {
		t.Errorf("build %q", reply.Build)
	}
	if got := c.build(t, ns, "app-1").Spec.TriggeredBy[0].Message; got != "Generic webhook" {
		t.Errorf("triggeredBy %q", got)
	}
}
