package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// TestSourceStrategyBuild is issue 7's BuildConfig on the real cluster: sourceStrategy with
// the s2i builder of the e2e suite (built here by kiln and pushed to the cluster's registry),
// a git source and a registry output build through the controller, in the same hardened pod
// as the Dockerfile strategy; the image runs as a pod and prints the assembled application.
func TestSourceStrategyBuild(t *testing.T) {
	e := needCluster(t)
	builder := e.imageRef("s2i-builder")
	builderCtx := filepath.Join(e.repo, "test", "e2e", "testdata", "s2i", "builder")
	if out, err := exec.Command(e.kiln, "build", "--root", t.TempDir(), "-q", "-t", e.hostRef(builder), "--push", builderCtx).CombinedOutput(); err != nil {
		t.Fatalf("building the s2i builder image %s with kiln on the host: %v\n%s", e.hostRef(builder), err, indent(string(out)))
	}
	files := readFiles(t, filepath.Join(e.repo, "test", "e2e", "testdata", "s2i", "source"))
	uri := e.gitServer(t, files)
	ref := e.imageRef("s2i-app")
	e.create(t, &kilnv1.BuildConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "s2i-app", Namespace: e.ns},
		Spec: kilnv1.BuildConfigSpec{
			CommonSpec: kilnv1.CommonSpec{
				Source: kilnv1.BuildSource{Git: &kilnv1.GitSource{URI: uri, Ref: "main"}},
				Strategy: kilnv1.BuildStrategy{Source: &kilnv1.SourceStrategy{From: builder,
					Env: []corev1.EnvVar{{Name: "EXTRA", Value: "from-the-buildconfig"}}}},
				Output: kilnv1.BuildOutput{To: ref},
			},
			Triggers: []kilnv1.BuildTrigger{{Type: kilnv1.TriggerConfigChange}},
		},
	})
	b := e.waitFinal(t, "s2i-app-1", 5*time.Minute)
	e.expectPhase(t, b, kilnv1.BuildPhaseComplete, "")
	if got := e.registryDigest(t, ref); got != b.Status.Output.Digest {
		t.Errorf("skopeo inspect of %s says %s; s2i-app-1's status says %s", e.hostRef(ref), got, b.Status.Output.Digest)
	}
	log := e.savedLog(t, b.Name)
	for _, want := range []string{"---> assembling as uid 1001, APP_MODE=prod", "s2i: assemble script from label io.openshift.s2i.scripts-url"} {
		if !strings.Contains(log, want) {
			t.Errorf("the build's log lacks %q:\n%s", want, indent(log))
		}
	}
	pod, err := e.cs.CoreV1().Pods(e.ns).Get(t.Context(), b.Status.PodName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the build pod %s: %v", b.Status.PodName, err)
	}
	checkBuildPodSpec(t, pod)

	image, phase, out := e.runBuiltImage(t, "s2i-app-run", ref, b)
	if want := files["app.txt"]; phase != corev1.PodSucceeded || out != want {
		t.Errorf("the pod running %s ended %s and printed %q, want %q (the s2i run script printing the assembled app)", image, phase, out, want)
	}
	summaryf(t, "sourceStrategy build s2i-app-1: Complete in %s, the image ran and printed the assembled app", b.Status.Duration.Duration)
}
