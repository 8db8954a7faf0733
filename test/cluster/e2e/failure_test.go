package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/controller"
)

// sleeping is what the long builds of TestFailurePaths print before they sleep.
const sleeping = "e2e: sleeping"

// sleeper is a Dockerfile whose RUN prints sleeping and then sleeps for ten minutes.
func (e *clusterEnv) sleeper() string {
	return "FROM " + e.base + "\nRUN echo '" + sleeping + "'; sleep 600\n"
}

// TestFailurePaths is acceptance 6: how builds end when they do not complete, and that their
// logs outlive their pods. The subtests run in parallel (three of them mostly sleep).
func TestFailurePaths(t *testing.T) {
	e := needCluster(t)

	t.Run("failing RUN: Failed with reason and logSnippet; kiln logs prints the whole log after the pod is gone", func(t *testing.T) {
		t.Parallel()
		const marker = "e2e: this step fails on purpose"
		b := e.inlineBuild("fail-run", "FROM "+e.base+"\nRUN echo '"+marker+"' && exit 3\n")
		e.create(t, b)
		got := e.waitFinal(t, b.Name, 3*time.Minute)
		e.expectPhase(t, got, kilnv1.BuildPhaseFailed, kilnv1.ReasonBuildFailed)
		if got.Status.Message == "" {
			t.Errorf("build %s failed with an empty status.message", b.Name)
		}
		// The snippet is the end of the saved log; the controller fills it in once the whole log
		// is saved, which may be a moment after the build ended.
		got = e.waitBuild(t, b.Name, time.Minute, "a logSnippet with the failing RUN's output", func(b *kilnv1.Build) bool {
			return strings.Contains(b.Status.LogSnippet, marker)
		})
		t.Logf("build %s: Failed, reason %s, message %q; logSnippet:\n%s", b.Name, got.Status.Reason, got.Status.Message, indent(got.Status.LogSnippet))

		// The whole log as the kubelet has it; then the pod goes, and kiln logs must still
		// print all of it (from the ConfigMaps the controller saved).
		pod := got.Status.PodName
		want := e.podLog(t, pod, fetchContainer) + e.podLog(t, pod, buildContainer)
		e.deletePod(t, pod)
		out := e.kilnRun(t, "logs", "build/"+b.Name)
		if out != want {
			t.Errorf("kiln logs build/%s after its pod was deleted printed %d bytes:\n%s\nthe pod's containers had logged %d bytes:\n%s",
				b.Name, len(out), indent(out), len(want), indent(want))
		}
		if !strings.Contains(out, marker) {
			t.Errorf("kiln logs build/%s does not show the failing step's output %q", b.Name, marker)
		}
		if after := e.getBuild(t, b.Name); after.Status.Phase != kilnv1.BuildPhaseFailed || after.Status.Reason != got.Status.Reason {
			t.Errorf("after its pod was deleted, build %s is %s/%s; a final phase must not change", b.Name, after.Status.Phase, after.Status.Reason)
		}
	})

	t.Run("deleted build pod: PodDeleted", func(t *testing.T) {
		t.Parallel()
		b := e.inlineBuild("pod-deleted", e.sleeper())
		e.create(t, b)
		pod := controller.PodName(b)
		e.waitPodLog(t, pod, buildContainer, sleeping, 3*time.Minute)
		e.checkHostUserNamespace(t, b)
		// As `kubectl delete pod` does it: with the pod's grace period.
		if err := e.cs.CoreV1().Pods(e.ns).Delete(context.Background(), pod, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting the build pod %s: %v", pod, err)
		}
		got := e.waitFinal(t, b.Name, 2*time.Minute)
		// api/v1alpha1 files a deleted pod under phase Error ("failed because of the system:
		// the pod was evicted or deleted"), with reason PodDeleted.
		e.expectPhase(t, got, kilnv1.BuildPhaseError, kilnv1.ReasonPodDeleted)
		e.waitPodGone(t, pod, 2*time.Minute)
		if out := e.kilnRun(t, "logs", "build/"+b.Name); !strings.Contains(out, sleeping) {
			t.Errorf("kiln logs build/%s after its pod was deleted does not show %q:\n%s", b.Name, sleeping, indent(out))
		}
	})

	t.Run("kiln cancel-build: Cancelled", func(t *testing.T) {
		t.Parallel()
		b := e.inlineBuild("cancel", e.sleeper())
		e.create(t, b)
		pod := controller.PodName(b)
		e.waitPodLog(t, pod, buildContainer, sleeping, 3*time.Minute)
		if out := e.kilnRun(t, "cancel-build", b.Name); strings.TrimSpace(out) != "build "+b.Name+" cancelled" {
			t.Errorf("kiln cancel-build %s printed %q", b.Name, out)
		}
		got := e.waitFinal(t, b.Name, 2*time.Minute)
		e.expectPhase(t, got, kilnv1.BuildPhaseCancelled, kilnv1.ReasonCancelled)
		e.waitPodGone(t, pod, 2*time.Minute) // the controller deletes the pod of a cancelled build
		if out := e.kilnRun(t, "logs", "build/"+b.Name); !strings.Contains(out, sleeping) {
			t.Errorf("kiln logs build/%s after it was cancelled does not show %q:\n%s", b.Name, sleeping, indent(out))
		}
	})

	t.Run("completionDeadlineSeconds exceeded: Failed with DeadlineExceeded", func(t *testing.T) {
		t.Parallel()
		const deadline = 30
		b := e.inlineBuild("deadline", e.sleeper())
		b.Spec.CompletionDeadlineSeconds = ptr.To[int64](deadline)
		e.create(t, b)
		got := e.waitFinal(t, b.Name, 4*time.Minute)
		e.expectPhase(t, got, kilnv1.BuildPhaseFailed, kilnv1.ReasonDeadlineExceeded)
		ran := got.Status.CompletionTimestamp.Sub(got.Status.StartTimestamp.Time)
		if ran < deadline*time.Second || ran > (deadline+60)*time.Second {
			t.Errorf("build %s ran %s before it failed with DeadlineExceeded; its deadline was %ds", b.Name, ran, deadline)
		}
		if !strings.Contains(e.savedLog(t, b.Name), sleeping) {
			t.Errorf("the saved log of %s does not show %q", b.Name, sleeping)
		}
		t.Logf("build %s: %s after %s: %s", b.Name, got.Status.Reason, ran, got.Status.Message)
	})
}

// checkHostUserNamespace looks at a running build's builder from the node: it must be uid 0
// in a user namespace whose ids map to unprivileged ids of the node.
func (e *clusterEnv) checkHostUserNamespace(t *testing.T, b *kilnv1.Build) {
	t.Helper()
	pid := 0
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		n, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) > 2 && filepath.Base(args[0]) == "kiln" && args[1] == "build" && strings.Contains(string(raw), "\x00"+b.Spec.Output.To+"\x00") &&
			(pid == 0 || n < pid) {
			pid = n
		}
	}
	if pid == 0 {
		t.Fatalf("no kiln build process for %s (--destination %s) on the node", b.Name, b.Spec.Output.To)
	}
	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	if err != nil {
		t.Fatalf("reading the uid_map of %s's builder (pid %d on the node): %v", b.Name, pid, err)
	}
	f := strings.Fields(string(uidMap))
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var hostUID string
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			hostUID = strings.Fields(rest)[0]
		}
	}
	if len(f) != 3 || f[0] != "0" || f[1] == "0" || f[1] != hostUID || f[2] != "65536" {
		t.Errorf("the builder of %s (pid %d on the node) has uid_map %q and node uid %s; want uid 0 inside mapped to a non-zero node uid, 65536 ids",
			b.Name, pid, strings.TrimSpace(string(uidMap)), hostUID)
		return
	}
	summaryf(t, "user namespace: the builder of %s is uid 0 in its pod and uid %s on the node (uid_map: 0 %s 65536)", b.Name, hostUID, f[1])
}
