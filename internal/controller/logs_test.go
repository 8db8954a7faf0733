package controller

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// fakeLogs plays the kubelet's log endpoint: each container of a build pod logged
// expectedLog's part for it.
type fakeLogs struct{}

func (fakeLogs) Open(_ context.Context, _, pod, container string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(containerLog(strings.TrimSuffix(pod, "-build"), container))), nil
}

// containerLog is what a container of a build logged: the build container of a build named
// big-* logs more than two chunks.
func containerLog(build, container string) string {
	if container == fetchContainer {
		return "cloned the source of " + build + "\n"
	}
	lines := 10
	if strings.HasPrefix(build, "big-") {
		lines = 120_000
	}
	var b strings.Builder
	for i := range lines {
		fmt.Fprintf(&b, "%s step %06d\n", build, i)
	}
	return b.String()
}

func expectedLog(build string) string {
	return containerLog(build, fetchContainer) + containerLog(build, buildContainer)
}

func TestLogsOutliveThePod(t *testing.T) {
	c := startCluster(t)
	c.startController(t)
	ctx := context.Background()
	ns := c.namespace(t)
	for _, name := range []string{"big", "small"} {
		if err := c.client.Create(ctx, buildConfig(ns, name, kilnv1.RunPolicySerial, kilnv1.TriggerConfigChange)); err != nil {
			t.Fatal(err)
		}
	}
	c.phase(t, ns, "big-1", kilnv1.BuildPhasePending)
	c.setPod(t, ns, "big-1", runningStatus())
	c.setPod(t, ns, "big-1", endedStatus(0, "Completed", `{"digest":"sha256:1"}`))
	c.phase(t, ns, "big-1", kilnv1.BuildPhaseComplete)
	c.phase(t, ns, "small-1", kilnv1.BuildPhasePending)
	c.setPod(t, ns, "small-1", runningStatus())
	c.setPod(t, ns, "small-1", endedStatus(1, "Error", `{"reason":"BuildFailed","message":"RUN failed"}`))
	c.phase(t, ns, "small-1", kilnv1.BuildPhaseFailed)

	for _, build := range []string{"big-1", "small-1"} {
		eventually(t, "the log of "+build+" to be saved", func() error {
			var buf bytes.Buffer
			complete, err := WriteSavedLog(ctx, c.client, ns, build, &buf)
			if err != nil || !complete {
				return fmt.Errorf("complete %v, err %v, %d bytes", complete, err, buf.Len())
			}
			return nil
		})
		// The pod goes; the log stays.
		if err := c.client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: build + "-build"}}); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := WriteSavedLog(ctx, c.client, ns, build, &buf); err != nil {
			t.Fatal(err)
		}
		if want := expectedLog(build); buf.String() != want {
			t.Errorf("%s: saved log of %d bytes differs from the %d bytes logged", build, buf.Len(), len(want))
		}
	}
	chunks, _ := ListLogChunks(ctx, c.client, ns, "big-1")
	if len(chunks) < 3 {
		t.Errorf("a %d-byte log was saved in %d chunks", len(expectedLog("big-1")), len(chunks))
	}
	eventually(t, "the log snippet of the failed build", func() error {
		var b kilnv1.Build
		if err := c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "small-1"}, &b); err != nil {
			return err
		}
		if !strings.HasSuffix(b.Status.LogSnippet, "small-1 step 000009") {
			return fmt.Errorf("snippet %q", b.Status.LogSnippet)
		}
		return nil
	})
}
