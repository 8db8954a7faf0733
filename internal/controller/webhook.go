package controller

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// Webhook constants.
const (
	// WebhookSecretKey is the key of a webhook trigger's Secret that holds the shared secret.
	WebhookSecretKey = "WebHookSecretKey"
	// WebhookPathPrefix starts the path of every webhook:
	// /webhooks/NAMESPACE/BUILDCONFIG/generic or /webhooks/NAMESPACE/BUILDCONFIG/github.
	WebhookPathPrefix = "/webhooks/"
	// webhookBodyLimit bounds a webhook's request body (GitHub caps its payloads at 25 MB,
	// but a push's is far smaller than this).
	webhookBodyLimit = 1 << 20
	// signatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body.
	signatureHeader = "X-Hub-Signature-256"
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kiln.dev,resources=builds,verbs=create

// NewWebhookServer returns the manager Runnable that serves h on addr ("host:port"). It
// speaks plain HTTP: TLS is terminated in front of it, by the Service's ingress, route or
// load balancer, which is what GitHub reaches. It runs on every replica, leader or not, so
// that any replica behind the Service can answer, and starts once the manager's cache has
// synced, so that it never answers from an empty cache.
func NewWebhookServer(addr string, h http.Handler) manager.Runnable {
	return webhookServer{&manager.Server{
		Name: "webhooks",
		Server: &http.Server{
			Addr:              addr,
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
		},
		ShutdownTimeout: ptr.To(10 * time.Second),
	}}
}

// webhookServer is an HTTP server the manager runs with its other non-leader runnables,
// after the caches have synced; the manager would start a bare *manager.Server before them.
type webhookServer struct {
	*manager.Server
}

// WebhookHandler serves the Generic and GitHub webhooks of BuildConfigs at
// POST /webhooks/NAMESPACE/BUILDCONFIG/TYPE, TYPE being generic or github. A delivery is
// authenticated with the Secret a trigger of that type names: for GitHub by the
// X-Hub-Signature-256 HMAC of the body, for Generic by the "secret" query parameter or the
// same signature. An accepted delivery starts a build (of the commit it reports, when that is
// a full object name and the source is git) and is answered 202 with {"build": NAME}.
type WebhookHandler struct {
	// Client reads BuildConfigs and starts builds.
	Client client.Client
	// Secrets reads the triggers' Secrets: the manager's API reader, so that the controller
	// neither caches nor watches every Secret of the cluster.
	Secrets client.Reader
	// Log records refused and failed deliveries; the zero Logger discards.
	Log logr.Logger
}

// githubPush is the part of a GitHub push event the webhook reads.
type githubPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Deleted    bool   `json:"deleted"`
	HeadCommit *struct {
		ID string `json:"id"`
	} `json:"head_commit"`
	Repository struct {
		DefaultBranch string `json:"default_branch"`
	} `json:"repository"`
}

// genericPayload is the optional body of a Generic webhook.
type genericPayload struct {
	Git *struct {
		Commit string `json:"commit"`
		Ref    string `json:"ref"`
	} `json:"git"`
}

// webhookReply is the JSON body of every answer.
type webhookReply struct {
	Build   string `json:"build,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ServeHTTP answers one webhook delivery.
func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ns, name, kind, ok := splitWebhookPath(r.URL.Path)
	if !ok {
		replyError(w, http.StatusNotFound, "no such webhook: the path is /webhooks/NAMESPACE/BUILDCONFIG/generic or /webhooks/NAMESPACE/BUILDCONFIG/github")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		replyError(w, http.StatusMethodNotAllowed, "webhooks take POST")
		return
	}
	var tt kilnv1.TriggerType
	switch kind {
	case "generic":
		tt = kilnv1.TriggerGeneric
	case "github":
		tt = kilnv1.TriggerGitHub
	default:
		replyError(w, http.StatusNotFound, fmt.Sprintf("no such webhook type %q: it is generic or github", kind))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, webhookBodyLimit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			replyError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", webhookBodyLimit))
			return
		}
		replyError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	ctx := r.Context()
	key := client.ObjectKey{Namespace: ns, Name: name}
	log := h.Log.WithValues("buildConfig", key.String(), "webhook", kind, "remoteAddr", r.RemoteAddr)
	if fwd := r.Header.Get("X-Forwarded-For"); fwd != "" {
		log = log.WithValues("forwardedFor", fwd)
	}
	var bc kilnv1.BuildConfig
	if err := h.Client.Get(ctx, key, &bc); err != nil {
		if apierrors.IsNotFound(err) {
			replyError(w, http.StatusNotFound, fmt.Sprintf("no BuildConfig %s", key))
			return
		}
		log.Error(err, "reading the BuildConfig of a webhook")
		replyError(w, http.StatusInternalServerError, "reading the BuildConfig failed; see the controller's log")
		return
	}
	var secrets []string
	for _, tr := range bc.Spec.Triggers {
		if tr.Type != tt {
			continue
		}
		cfg := tr.Generic
		if tt == kilnv1.TriggerGitHub {
			cfg = tr.GitHub
		}
		if cfg != nil && cfg.SecretName != "" {
			secrets = append(secrets, cfg.SecretName)
		}
	}
	if len(secrets) == 0 {
		replyError(w, http.StatusNotFound, fmt.Sprintf("BuildConfig %s has no %s trigger with a secret", key, tt))
		return
	}
	if why := h.authenticate(ctx, log, ns, secrets, r, body, tt == kilnv1.TriggerGeneric); why != "" {
		log.Info("refused a webhook delivery", "reason", why)
		replyError(w, http.StatusUnauthorized, "the delivery is not signed with the trigger's secret")
		return
	}

	var cause kilnv1.BuildTriggerCause
	if tt == kilnv1.TriggerGitHub {
		var (
			status int
			msg    string
		)
		cause, status, msg = githubCause(&bc, r, body)
		if status != 0 {
			if status >= 400 {
				replyError(w, status, msg)
			} else {
				reply(w, status, webhookReply{Message: msg})
			}
			return
		}
	} else {
		cause = kilnv1.BuildTriggerCause{Message: "Generic webhook"}
		if len(bytes.TrimSpace(body)) > 0 {
			var p genericPayload
			if err := json.Unmarshal(body, &p); err != nil {
				replyError(w, http.StatusBadRequest, "the body is not the JSON of a generic webhook: "+err.Error())
				return
			}
			if p.Git != nil {
				cause.Commit, cause.Ref = p.Git.Commit, p.Git.Ref
			}
		}
	}
	// A caller that hangs up must not leave a build numbered but never created.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	b, err := Instantiate(ictx, h.Client, key, cause, false, pinCommit(cause.Commit))
	if err != nil {
		log.Error(err, "starting a build for a webhook")
		replyError(w, http.StatusInternalServerError, "starting a build failed; see the controller's log")
		return
	}
	log.Info("started a build for a webhook", "build", b.Name, "commit", cause.Commit, "ref", cause.Ref)
	reply(w, http.StatusAccepted, webhookReply{Build: b.Name, Message: "started build " + b.Name})
}

// authenticate checks the delivery against each named Secret in turn; it returns "" when
// one matches, else why none did (never a secret). The signature header is accepted for
// both types, the "secret" query parameter for Generic webhooks only.
func (h *WebhookHandler) authenticate(ctx context.Context, log logr.Logger, ns string, secrets []string, r *http.Request, body []byte, generic bool) string {
	sig := r.Header.Get(signatureHeader)
	query := ""
	if generic {
		query = r.URL.Query().Get("secret")
	}
	if sig == "" && query == "" {
		if generic {
			return "neither a secret query parameter nor " + signatureHeader
		}
		return "no " + signatureHeader + " header"
	}
	why := "the signature does not match"
	if sig == "" {
		why = "the secret does not match"
	}
	usable := false
	for _, name := range secrets {
		var s corev1.Secret
		if err := h.Secrets.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			log.Error(err, "reading the Secret of a webhook trigger", "secret", name)
			continue
		}
		key := s.Data[WebhookSecretKey]
		if len(key) == 0 {
			log.Info("the Secret of a webhook trigger has no "+WebhookSecretKey, "secret", name)
			continue
		}
		usable = true
		if sig != "" && validSignature(sig, body, key) {
			return ""
		}
		if query != "" && equalSecrets([]byte(query), key) {
			return ""
		}
	}
	if !usable {
		return "none of the triggers' Secrets could be read or holds " + WebhookSecretKey
	}
	return why
}

// githubCause reads a GitHub delivery. For a push to the source's branch it returns the
// cause of the build to start; otherwise a status and message to answer with.
func githubCause(bc *kilnv1.BuildConfig, r *http.Request, body []byte) (kilnv1.BuildTriggerCause, int, string) {
	switch event := r.Header.Get("X-GitHub-Event"); event {
	case "ping":
		return kilnv1.BuildTriggerCause{}, http.StatusOK, "pong"
	case "push":
	case "":
		return kilnv1.BuildTriggerCause{}, http.StatusBadRequest, "no X-GitHub-Event header"
	default:
		return kilnv1.BuildTriggerCause{}, http.StatusOK, fmt.Sprintf("ignored: event %q", event)
	}
	payload := body
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return kilnv1.BuildTriggerCause{}, http.StatusBadRequest, "the body is not a form: " + err.Error()
		}
		payload = []byte(form.Get("payload"))
	}
	var push githubPush
	if err := json.Unmarshal(payload, &push); err != nil {
		return kilnv1.BuildTriggerCause{}, http.StatusBadRequest, "the body is not the JSON of a push event: " + err.Error()
	}
	if push.Deleted {
		return kilnv1.BuildTriggerCause{}, http.StatusOK, "ignored: the push deleted " + push.Ref
	}
	if git := bc.Spec.Source.Git; git != nil {
		want := git.Ref
		if want == "" {
			// The source follows the remote's HEAD: its default branch.
			want = push.Repository.DefaultBranch
		}
		if want != "" && push.Ref != want && push.Ref != "refs/heads/"+want && push.Ref != "refs/tags/"+want {
			return kilnv1.BuildTriggerCause{}, http.StatusOK, "ignored: push to other branch"
		}
	}
	commit := push.After
	if commit == "" && push.HeadCommit != nil {
		commit = push.HeadCommit.ID
	}
	return kilnv1.BuildTriggerCause{Message: "GitHub push", Commit: commit, Ref: push.Ref}, 0, ""
}

// pinCommit is an edit of a new build that checks out commit, so the build is of the commit
// the webhook reported rather than of whatever its branch points at when the pod fetches it.
// Only full hex object names are pinned: anything else stays a cause, for people to read.
func pinCommit(commit string) func(*kilnv1.Build) {
	return func(b *kilnv1.Build) {
		if g := b.Spec.Source.Git; g != nil && isObjectName(commit) {
			g.Ref = commit
		}
	}
}

// isObjectName reports whether s is a full git object name: 40 (SHA-1) or 64 (SHA-256)
// lowercase hex digits.
func isObjectName(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// splitWebhookPath reads NAMESPACE, BUILDCONFIG and TYPE from a webhook's path.
func splitWebhookPath(path string) (ns, name, kind string, ok bool) {
	rest, found := strings.CutPrefix(path, WebhookPathPrefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// validSignature checks an X-Hub-Signature-256 value against the HMAC-SHA256 of body with key.
func validSignature(header string, body, key []byte) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// equalSecrets compares two secrets in constant time; hashing them first hides their lengths.
func equalSecrets(a, b []byte) bool {
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	return hmac.Equal(ha[:], hb[:])
}

// reply writes v as the JSON body of an answer with status.
func reply(w http.ResponseWriter, status int, v webhookReply) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// replyError answers with status and msg as the error.
func replyError(w http.ResponseWriter, status int, msg string) {
	reply(w, status, webhookReply{Error: msg})
}
