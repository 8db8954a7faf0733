package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// Where the controller puts things in a build pod (internal/controller/pod.go).
const (
	buildContainer = "build"
	fetchContainer = "fetch-source"
	storeMountPath = "/var/lib/kiln"
	seccompProfile = "kiln/kiln-seccomp.json"
)

// stepLine is a line of kiln build's log that ends a step: "[stage 1/1] --> ...".
var stepLine = regexp.MustCompile(`(?m)^\[stage \d+/\d+\] --> .*$`)

// TestGitBuild is acceptance 1-3 of issue 8, on one BuildConfig: a git source served by the
// test on the node's address, the Dockerfile strategy with a base image from the cluster's
// registry, and a registry output.
//  1. The ConfigChange build reaches Complete with the digest the registry has, and its pod is
//     locked down (hostUsers: false, uid 0 of its user namespace, no escalation, no privilege,
//     no hostPath, the Localhost seccomp profile, the store in an emptyDir).
//  2. The image runs as a pod and prints what the Dockerfile says.
//  3. A second build (kiln start-build), in a new pod with an empty store, takes every step
//     from the registry cache; the suite reports its time against the first's.
func TestGitBuild(t *testing.T) {
	e := needCluster(t)
	files := readFiles(t, "testdata/app")
	files["run.txt"] = "run " + e.run + "\n"
	uri := e.gitServer(t, files)
	ref := e.imageRef("git-app")
	e.create(t, &kilnv1.BuildConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "git-app", Namespace: e.ns},
		Spec: kilnv1.BuildConfigSpec{
			CommonSpec: kilnv1.CommonSpec{
				Source:   kilnv1.BuildSource{Git: &kilnv1.GitSource{URI: uri, Ref: "main"}},
				Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{BuildArgs: []corev1.EnvVar{{Name: "BASE", Value: e.base}}}},
				Output:   kilnv1.BuildOutput{To: ref},
			},
			Triggers: []kilnv1.BuildTrigger{{Type: kilnv1.TriggerConfigChange}},
		},
	})

	var first *kilnv1.Build
	if !t.Run("first build: Complete, digest as the registry has it", func(t *testing.T) {
		// The ConfigChange trigger starts git-app-1 when the BuildConfig is created.
		first = e.waitFinal(t, "git-app-1", 5*time.Minute)
		e.expectPhase(t, first, kilnv1.BuildPhaseComplete, "")
		if c := first.Spec.TriggeredBy; len(c) != 1 || c[0].Message != "Build configuration created" {
			t.Errorf("git-app-1 was triggered by %+v, want the ConfigChange trigger's \"Build configuration created\"", c)
		}
		out := first.Status.Output
		if out.Image != ref || !strings.HasPrefix(out.Digest, "sha256:") {
			t.Fatalf("git-app-1's status.output is %+v, want image %s and a sha256 digest", out, ref)
		}
		if got := e.registryDigest(t, ref); got != out.Digest {
			t.Errorf("skopeo inspect of %s says %s; git-app-1's status says %s", e.hostRef(ref), got, out.Digest)
		}
		log := e.savedLog(t, first.Name)
		if steps := stepLine.FindAllString(log, -1); len(steps) < 4 || strings.Contains(log, "--> cached") {
			t.Errorf("the first build should run every step (a new cache repository); its steps:\n%s", indent(strings.Join(steps, "\n")))
		}
		summaryf(t, "git build 1 (cold cache): %s from pod creation to Complete; kiln's stages %s", first.Status.Duration.Duration, stages(first))
	}) {
		t.FailNow()
	}

	t.Run("first build's pod is locked down", func(t *testing.T) {
		pod, err := e.cs.CoreV1().Pods(e.ns).Get(context.Background(), first.Status.PodName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading the build pod %s of git-app-1 (the controller keeps it until the build is pruned): %v", first.Status.PodName, err)
		}
		checkBuildPodSpec(t, pod)
	})

	t.Run("built image runs as a pod", func(t *testing.T) {
		image, phase, log := e.runBuiltImage(t, "git-app-run", ref, first)
		want := files["hello.txt"] + files["run.txt"] + "counted to 500000\n1000\n"
		if phase != corev1.PodSucceeded || log != want {
			t.Errorf("the pod running %s ended %s and printed:\n%s\nwant:\n%s", image, phase, indent(log), indent(want))
		}
	})

	t.Run("second build: new pod, empty store, every step from the registry cache", func(t *testing.T) {
		name := strings.TrimSpace(e.kilnRun(t, "start-build", "git-app"))
		if name != "git-app-2" {
			t.Fatalf("kiln start-build git-app printed %q, want the new build's name git-app-2", name)
		}
		second := e.waitFinal(t, name, 5*time.Minute)
		e.expectPhase(t, second, kilnv1.BuildPhaseComplete, "")
		pods := e.cs.CoreV1().Pods(e.ns)
		p1, err1 := pods.Get(context.Background(), first.Status.PodName, metav1.GetOptions{})
		p2, err2 := pods.Get(context.Background(), second.Status.PodName, metav1.GetOptions{})
		if err1 != nil || err2 != nil {
			t.Fatalf("reading the two build pods: %v, %v", err1, err2)
		}
		if p1.UID == p2.UID {
			t.Errorf("both builds ran in pod %s (uid %s); the second needs a new pod", p2.Name, p2.UID)
		}
		checkBuildPodSpec(t, p2) // a new pod, so a new, empty emptyDir store
		log := e.savedLog(t, name)
		steps := stepLine.FindAllString(log, -1)
		cached := 0
		for _, s := range steps {
			if strings.Contains(s, "--> cached") {
				cached++
			}
		}
		if len(steps) == 0 || cached != len(steps) {
			t.Errorf("the second build took %d of its %d steps from the cache, want all; its log:\n%s", cached, len(steps), indent(log))
		}
		if !strings.Contains(log, "steps from registry "+strings.TrimSuffix(ref, ":latest")+"/cache") {
			t.Errorf("the second build's log does not say it imported the registry cache %s/cache:\n%s", strings.TrimSuffix(ref, ":latest"), indent(log))
		}
		if got := e.registryDigest(t, ref); got != second.Status.Output.Digest {
			t.Errorf("skopeo inspect of %s says %s; git-app-2's status says %s", e.hostRef(ref), got, second.Status.Output.Digest)
		}
		// README: a rebuild whose every step hits gives the same image digest.
		if second.Status.Output.Digest != first.Status.Output.Digest {
			t.Errorf("the fully cached rebuild pushed %s, the first build %s: README promises the same digest", second.Status.Output.Digest, first.Status.Output.Digest)
		}
		d1, d2 := first.Status.Duration.Duration, second.Status.Duration.Duration
		s1, s2 := kilnTime(first), kilnTime(second)
		summaryf(t, "git build 2 (registry cache, empty store): %s; %d/%d steps cached; time ratio second/first = %.2f (%s / %s); kiln's own stages %s / %s = %.2f",
			d2, cached, len(steps), d2.Seconds()/d1.Seconds(), d2, d1, s2, s1, s2.Seconds()/s1.Seconds())
	})
}

// checkBuildPodSpec checks what issue 8 asks of a build pod's spec.
func checkBuildPodSpec(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Errorf("build pod %s: "+format, append([]any{pod.Name}, args...)...)
	}
	s := pod.Spec
	if s.HostUsers == nil || *s.HostUsers {
		bad("hostUsers is %v, want false (a user namespace of its own)", ptrString(s.HostUsers))
	}
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		bad("automountServiceAccountToken is %v, want false", ptrString(s.AutomountServiceAccountToken))
	}
	psc := s.SecurityContext
	if psc == nil {
		bad("no pod securityContext")
		return
	}
	// README and pod.go: kiln runs as uid 0 of the pod's own user namespace (so that it can map
	// the pod's 65536 ids into RUN steps); hostUsers: false makes that uid unprivileged.
	if psc.RunAsUser == nil || *psc.RunAsUser != 0 {
		bad("securityContext.runAsUser is %v, want 0 (uid 0 inside the pod's user namespace, the documented default)", ptrString(psc.RunAsUser))
	}
	if sp := psc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || sp.LocalhostProfile == nil || *sp.LocalhostProfile != seccompProfile {
		bad("seccompProfile is %+v, want Localhost %s", sp, seccompProfile)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range s.Volumes {
		volumes[v.Name] = v
		if v.HostPath != nil {
			bad("volume %s is a hostPath (%s)", v.Name, v.HostPath.Path)
		}
		if v.Projected != nil {
			bad("volume %s is projected (a service account token?)", v.Name)
		}
	}
	all := append(append([]corev1.Container(nil), s.InitContainers...), s.Containers...)
	if len(all) != 2 {
		bad("%d containers, want the fetch-source init container and the build container", len(all))
	}
	allowedCaps := map[corev1.Capability]bool{"SETUID": true, "SETGID": true, "SETFCAP": true}
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			bad("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("container %s: allowPrivilegeEscalation is %v, want false", c.Name, ptrString(sc.AllowPrivilegeEscalation))
		}
		if sc.RunAsUser != nil && *sc.RunAsUser != 0 {
			bad("container %s overrides runAsUser with %d", c.Name, *sc.RunAsUser)
		}
		if sc.SeccompProfile != nil && (sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost || ptrString(sc.SeccompProfile.LocalhostProfile) != seccompProfile) {
			bad("container %s overrides the seccomp profile with %+v", c.Name, sc.SeccompProfile)
		}
		if caps := sc.Capabilities; caps == nil || len(caps.Drop) != 1 || caps.Drop[0] != "ALL" {
			bad("container %s does not drop ALL capabilities: %+v", c.Name, caps)
		} else {
			for _, add := range caps.Add {
				if !allowedCaps[add] {
					bad("container %s adds capability %s (only SETUID, SETGID, SETFCAP are needed)", c.Name, add)
				}
			}
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.MountPath, "/var/run/secrets/kubernetes.io") {
				bad("container %s mounts %s at %s", c.Name, m.Name, m.MountPath)
			}
		}
		if c.Name == buildContainer {
			found := false
			for _, m := range c.VolumeMounts {
				if m.MountPath == storeMountPath {
					found = true
					if v := volumes[m.Name]; v.EmptyDir == nil {
						bad("the store (%s) is volume %s, not an emptyDir: %+v", storeMountPath, m.Name, v.VolumeSource)
					} else if v.EmptyDir.SizeLimit == nil {
						bad("the store's emptyDir %s has no sizeLimit", m.Name)
					}
				}
			}
			if !found {
				bad("the build container mounts nothing at %s (the store)", storeMountPath)
			}
		}
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// stages renders a build's stage durations.
func stages(b *kilnv1.Build) string {
	var parts []string
	for _, s := range b.Status.Stages {
		parts = append(parts, fmt.Sprintf("%s %dms", s.Name, s.DurationMilliseconds))
	}
	return strings.Join(parts, ", ")
}

// kilnTime is the time kiln build itself reported: pulling, building and pushing.
func kilnTime(b *kilnv1.Build) time.Duration {
	var ms int64
	for _, s := range b.Status.Stages {
		if s.Name != kilnv1.StageFetchInputs {
			ms += s.DurationMilliseconds
		}
	}
	return time.Duration(ms) * time.Millisecond
}

// TestBinaryBuild is acceptance 4: `kiln start-build BC --from-dir DIR --follow` uploads the
// directory into the build pod, streams the build's log while it runs, and the build ends
// Complete with the image in the registry.
func TestBinaryBuild(t *testing.T) {
	e := needCluster(t)
	ref := e.imageRef("bin-app")
	e.create(t, &kilnv1.BuildConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "bin-app", Namespace: e.ns},
		Spec: kilnv1.BuildConfigSpec{CommonSpec: kilnv1.CommonSpec{
			Source:   kilnv1.BuildSource{Binary: &kilnv1.BinarySource{}},
			Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{BuildArgs: []corev1.EnvVar{{Name: "BASE", Value: e.base}}}},
			Output:   kilnv1.BuildOutput{To: ref},
		}},
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.kilnCmd(ctx, "start-build", "bin-app", "--from-dir", "testdata/binary", "--follow")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	type line struct {
		at   time.Duration
		text string
	}
	var lines []line
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting kiln start-build: %v", err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, line{time.Since(start), sc.Text()})
	}
	err = cmd.Wait()
	exited := time.Since(start)
	var all strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&all, "%6.1fs %s\n", l.at.Seconds(), l.text)
	}
	if err != nil {
		t.Fatalf("kiln start-build bin-app --from-dir testdata/binary --follow: %v\nstdout (time of each line):\n%s\nstderr:\n%s", err, indent(all.String()), indent(stderr.String()))
	}
	t.Logf("kiln start-build --follow printed (time of each line since the command started):\n%s\nstderr:\n%s", indent(all.String()), indent(stderr.String()))

	m := regexp.MustCompile(`build (bin-app-\d+) started`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("kiln start-build did not say which build it started; stderr:\n%s", indent(stderr.String()))
	}
	name := m[1]
	var firstAt, lastAt time.Duration = -1, -1
	for _, l := range lines {
		switch l.text {
		case "e2e-binary: first line":
			firstAt = l.at
		case "e2e-binary: last line":
			lastAt = l.at
		}
	}
	switch {
	case firstAt < 0 || lastAt < 0:
		t.Errorf("kiln start-build --follow did not print both lines of the RUN step (the build container's log)")
	case lastAt-firstAt < 3*time.Second:
		// The RUN sleeps 6 s between the two lines: a log printed only at the end would show
		// them together.
		t.Errorf("the RUN's two lines, 6 s apart in the build, came %s apart: the log was not streamed live", lastAt-firstAt)
	}
	b := e.waitFinal(t, name, 2*time.Minute)
	e.expectPhase(t, b, kilnv1.BuildPhaseComplete, "")
	if got := e.registryDigest(t, ref); got != b.Status.Output.Digest {
		t.Errorf("skopeo inspect of %s says %s; %s's status says %s", e.hostRef(ref), got, name, b.Status.Output.Digest)
	}
	if firstAt >= 0 && lastAt >= 0 {
		summaryf(t, "binary build %s: the RUN's two lines (6 s apart) reached kiln start-build --follow at %.1fs and %.1fs; it exited at %.1fs; Complete in %s",
			name, firstAt.Seconds(), lastAt.Seconds(), exited.Seconds(), b.Status.Duration.Duration)
	}
}

// webhookReply is the JSON the webhook server answers with.
type webhookReply struct {
	Build   string `json:"build"`
	Message string `json:"message"`
	Error   string `json:"error"`
}

// TestWebhooks is acceptance 5: the controller's Generic and GitHub webhooks, reached through
// their Service's ClusterIP from the node (kube-proxy), start a build when the delivery carries
// the trigger's secret (the "secret" query parameter, or the X-Hub-Signature-256 HMAC-SHA256 of
// the body) and refuse it otherwise.
func TestWebhooks(t *testing.T) {
	e := needCluster(t)
	key := make([]byte, 16)
	rand.Read(key)
	secret := hex.EncodeToString(key)
	e.create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "hook-secret", Namespace: e.ns},
		StringData: map[string]string{"WebHookSecretKey": secret},
	})
	e.create(t, &kilnv1.BuildConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: e.ns},
		Spec: kilnv1.BuildConfigSpec{
			CommonSpec: kilnv1.CommonSpec{
				Source:   kilnv1.BuildSource{Dockerfile: ptr.To("FROM " + e.base + "\nRUN echo built for a webhook\n")},
				Strategy: kilnv1.BuildStrategy{Docker: &kilnv1.DockerStrategy{}},
				Output:   kilnv1.BuildOutput{To: e.imageRef("hook")},
			},
			Triggers: []kilnv1.BuildTrigger{
				{Type: kilnv1.TriggerGeneric, Generic: &kilnv1.WebhookTrigger{SecretName: "hook-secret"}},
				{Type: kilnv1.TriggerGitHub, GitHub: &kilnv1.WebhookTrigger{SecretName: "hook-secret"}},
			},
		},
	})
	svc, err := e.cs.CoreV1().Services("kiln-system").Get(context.Background(), "kiln-webhooks", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the webhook Service kiln-system/kiln-webhooks (config/manager): %v", err)
	}
	if svc.Spec.ClusterIP == "" || len(svc.Spec.Ports) == 0 {
		t.Fatalf("the webhook Service has no ClusterIP or port: %+v", svc.Spec)
	}
	base := fmt.Sprintf("http://%s:%d/webhooks/%s/hook/", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port, e.ns)
	httpc := &http.Client{Timeout: 20 * time.Second}
	post := func(t *testing.T, kind, query string, header map[string]string, body string) (int, webhookReply) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+kind+query, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		// The Service may need a moment after the BuildConfig appears (the controller reads
		// it from its cache); a 404 naming the BuildConfig is retried for a few seconds.
		for try := 0; ; try++ {
			resp, err := httpc.Do(req)
			if err != nil {
				t.Fatalf("POST %s (the webhook Service's ClusterIP, through kube-proxy, from the node): %v", req.URL.Redacted(), err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var r webhookReply
			json.Unmarshal(raw, &r)
			if resp.StatusCode == http.StatusNotFound && strings.Contains(r.Error, "no BuildConfig") && try < 20 {
				time.Sleep(500 * time.Millisecond)
				req.Body = io.NopCloser(strings.NewReader(body))
				continue
			}
			return resp.StatusCode, r
		}
	}
	sign := func(key, body string) string {
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte(body))
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	commit := strings.Repeat("c0ffee", 7)[:40]
	push := fmt.Sprintf(`{"ref":"refs/heads/main","after":"%s","repository":{"default_branch":"main"}}`, commit)

	t.Run("refused without the secret", func(t *testing.T) {
		for _, c := range []struct {
			what, kind, query string
			header            map[string]string
			body              string
		}{
			{"generic, wrong secret parameter", "generic", "?secret=not-the-secret", nil, ""},
			{"generic, no secret at all", "generic", "", nil, ""},
			{"generic, HMAC with the wrong key", "generic", "", map[string]string{"X-Hub-Signature-256": sign("not-the-secret", "{}")}, "{}"},
			{"generic, HMAC of another body", "generic", "", map[string]string{"X-Hub-Signature-256": sign(secret, "{}")}, `{"git":{"ref":"x"}}`},
			{"github push, wrong HMAC", "github", "", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign("not-the-secret", push)}, push},
			{"github push, no signature", "github", "", map[string]string{"X-GitHub-Event": "push"}, push},
			{"github push, the secret as a query parameter (Generic only)", "github", "?secret=" + secret, map[string]string{"X-GitHub-Event": "push"}, push},
		} {
			status, r := post(t, c.kind, c.query, c.header, c.body)
			if status != http.StatusUnauthorized || r.Build != "" {
				t.Errorf("%s: answered %d %+v, want 401 and no build", c.what, status, r)
			}
		}
		var list kilnv1.BuildList
		if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns), client.MatchingLabels{kilnv1.BuildConfigLabel: "hook"}); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 0 {
			t.Errorf("refused deliveries left %d builds of hook", len(list.Items))
		}
	})

	t.Run("accepted with the secret, and the build completes", func(t *testing.T) {
		var started []string
		for _, c := range []struct {
			what, kind, query string
			header            map[string]string
			body              string
			cause             string
		}{
			{"generic, secret parameter", "generic", "?secret=" + secret, nil, "", "Generic webhook"},
			{"generic, HMAC of the body", "generic", "", map[string]string{"X-Hub-Signature-256": sign(secret, `{"git":{"ref":"main"}}`)}, `{"git":{"ref":"main"}}`, "Generic webhook"},
			{"github push, HMAC of the body", "github", "", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(secret, push)}, push, "GitHub push"},
		} {
			status, r := post(t, c.kind, c.query, c.header, c.body)
			if status != http.StatusAccepted || r.Build == "" {
				t.Errorf("%s: answered %d %+v, want 202 and the name of the build it started", c.what, status, r)
				continue
			}
			b := e.getBuild(t, r.Build)
			if tb := b.Spec.TriggeredBy; len(tb) != 1 || tb[0].Message != c.cause {
				t.Errorf("%s: build %s was triggered by %+v, want %q", c.what, b.Name, tb, c.cause)
			}
			if c.kind == "github" && b.Spec.TriggeredBy[0].Commit != commit {
				t.Errorf("%s: build %s records commit %q, want the push's %s", c.what, b.Name, b.Spec.TriggeredBy[0].Commit, commit)
			}
			started = append(started, r.Build)
		}
		for _, name := range started {
			b := e.waitFinal(t, name, 5*time.Minute)
			e.expectPhase(t, b, kilnv1.BuildPhaseComplete, "")
		}
		summaryf(t, "webhooks: 7 bad deliveries refused with 401; %d good ones started %s, all Complete", len(started), strings.Join(started, ", "))
	})
}
