package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/registry"
	"github.com/kiln-build/kiln/test/registrytest"
)

// unreachableRegistry answers every digest request with an error.
type unreachableRegistry struct{}

// Digest fails.
func (unreachableRegistry) Digest(context.Context, string) (v1.Hash, error) {
	return v1.Hash{}, errors.New("the registry is not reachable in this test")
}

func TestFinalBaseImage(t *testing.T) {
	for _, tc := range []struct {
		name, dockerfile, target string
		args                     map[string]string
		unknown                  []string
		want, err                string
	}{
		{name: "one stage", dockerfile: "FROM alpine:3.20\nRUN true\n", want: "alpine:3.20"},
		{name: "last stage", dockerfile: "FROM golang:1.26 AS build\nRUN go build\nFROM debian:12-slim\nCOPY --from=build /x /x\n", want: "debian:12-slim"},
		{name: "stage name followed", dockerfile: "FROM busybox AS base\nFROM golang AS build\nFROM BASE\n", want: "busybox"},
		{name: "stage chain", dockerfile: "FROM reg.test/a:1 AS one\nFROM one AS two\nFROM two\n", want: "reg.test/a:1"},
		{name: "target", dockerfile: "FROM alpine AS dev\nFROM debian AS prod\n", target: "dev", want: "alpine"},
		{name: "missing target", dockerfile: "FROM alpine AS dev\n", target: "prod", err: `target stage "prod"`},
		{name: "platform flag", dockerfile: "FROM --platform=$BUILDPLATFORM golang AS b\nFROM gcr.io/distroless/static\n", want: "gcr.io/distroless/static"},
		{name: "arg default", dockerfile: "ARG BASE=alpine:3.19\nFROM $BASE\n", want: "alpine:3.19"},
		{name: "arg from build args", dockerfile: "ARG BASE=alpine:3.19\nFROM ${BASE}\n", args: map[string]string{"BASE": "alpine:3.21"}, want: "alpine:3.21"},
		{name: "arg in arg", dockerfile: "ARG REG=reg.test\nARG IMG=${REG}/base\nFROM $IMG:v1\n", want: "reg.test/base:v1"},
		{name: "empty arg with default form", dockerfile: "ARG BASE\nFROM ${BASE:-busybox}\n", want: "busybox"},
		{name: "arg without value", dockerfile: "ARG BASE\nFROM $BASE\n", err: "expands to nothing"},
		{name: "undeclared arg", dockerfile: "FROM $NOPE\n", err: "NOPE"},
		{name: "build arg from a secret", dockerfile: "ARG BASE=alpine\nFROM $BASE\n", unknown: []string{"BASE"}, err: "BASE"},
		{name: "arg from a secret arg", dockerfile: "ARG REG\nARG IMG=$REG/base\nFROM $IMG\n", unknown: []string{"REG"}, err: "IMG"},
		{name: "scratch", dockerfile: "FROM scratch\nCOPY x /\n", err: "FROM scratch"},
		{name: "scratch through a stage", dockerfile: "FROM scratch AS s\nFROM s\n", err: "FROM scratch"},
		{name: "no FROM", dockerfile: "# nothing\n", err: "Dockerfile"},
		{name: "a later stage is not a base", dockerfile: "FROM later\nFROM alpine AS later\nFROM later AS last\n", target: "", want: "alpine"},
		{name: "forward reference is an image", dockerfile: "FROM later AS first\nFROM alpine AS later\n", target: "first", want: "later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := finalBaseImage(tc.dockerfile, tc.target, tc.args, tc.unknown)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want an error about %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestWatchedImage(t *testing.T) {
	bc := buildConfig("ns", "app", kilnv1.RunPolicySerial)
	bc.Spec.Source.Dockerfile = ptr.To("ARG BASE=alpine\nFROM $BASE\n")
	bc.Spec.Strategy.Docker.BuildArgs = []corev1.EnvVar{{Name: "BASE", Value: "debian:12"}}
	if got, err := watchedImage(bc, nil); err != nil || got != "debian:12" {
		t.Errorf("inline Dockerfile: %q, %v", got, err)
	}
	bc.Spec.Strategy.Docker.BuildArgs = []corev1.EnvVar{{Name: "BASE", ValueFrom: &corev1.EnvVarSource{}}}
	if _, err := watchedImage(bc, &kilnv1.ImageChangeTrigger{}); err == nil {
		t.Error("a build arg from a Secret resolved")
	}
	if got, err := watchedImage(bc, &kilnv1.ImageChangeTrigger{From: "reg.test/x:1"}); err != nil || got != "reg.test/x:1" {
		t.Errorf("from: %q, %v", got, err)
	}
	git := buildConfig("ns", "app", kilnv1.RunPolicySerial)
	git.Spec.Source = kilnv1.BuildSource{Git: &kilnv1.GitSource{URI: "https://example.com/app.git"}}
	if _, err := watchedImage(git, nil); err == nil || err.Error() != "set imageChange.from: the Dockerfile is in git" {
		t.Errorf("git source: %v", err)
	}
	git.Spec.Source.Dockerfile = ptr.To("FROM alpine\n")
	if got, err := watchedImage(git, nil); err != nil || got != "alpine" {
		t.Errorf("git source with an inline Dockerfile: %q, %v", got, err)
	}
	s2i := buildConfig("ns", "app", kilnv1.RunPolicySerial)
	s2i.Spec.Strategy = kilnv1.BuildStrategy{Source: &kilnv1.SourceStrategy{From: "reg.test/builder:1"}}
	if got, err := watchedImage(s2i, nil); err != nil || got != "reg.test/builder:1" {
		t.Errorf("source strategy: %q, %v", got, err)
	}
}

func TestBackoffAndJitter(t *testing.T) {
	for _, tc := range []struct {
		interval, max time.Duration
		failures      int
		want          time.Duration
	}{
		{5 * time.Minute, time.Hour, 0, 5 * time.Minute},
		{5 * time.Minute, time.Hour, 1, 10 * time.Minute},
		{5 * time.Minute, time.Hour, 3, 40 * time.Minute},
		{5 * time.Minute, time.Hour, 4, time.Hour},
		{5 * time.Minute, time.Hour, 1000, time.Hour},
		{2 * time.Hour, time.Hour, 3, 2 * time.Hour},
	} {
		if got := backoff(tc.interval, tc.max, tc.failures); got != tc.want {
			t.Errorf("backoff(%v, %v, %d) = %v, want %v", tc.interval, tc.max, tc.failures, got, tc.want)
		}
	}
	lo, hi := time.Hour, time.Duration(0)
	for range 1000 {
		d := jitter(100 * time.Second)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 80*time.Second || hi > 120*time.Second || hi-lo < 30*time.Second {
		t.Errorf("jitter of 100s spans [%v, %v], want within [80s, 120s] and spread", lo, hi)
	}
}

// pushRandom pushes a new random image to ref and returns its digest.
func pushRandom(t *testing.T, ref string) string {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// startImagePoller runs a manager with the BuildConfig controller and r until the test ends.
func (c *cluster) startImagePoller(t *testing.T, r *ImageChangeReconciler) {
	t.Helper()
	mgr := c.newManager(t)
	if err := (&BuildConfigReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	r.Client, r.APIReader = mgr.GetClient(), mgr.GetAPIReader()
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	run(t, mgr)
}

// imageChanges waits for the BuildConfig's status.imageChanges to satisfy ok, and returns them.
func (c *cluster) imageChanges(t *testing.T, ns, name, what string, ok func([]kilnv1.ImageChangeStatus) error) *kilnv1.BuildConfig {
	t.Helper()
	var bc kilnv1.BuildConfig
	eventually(t, what, func() error {
		if err := c.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &bc); err != nil {
			return err
		}
		if len(bc.Status.ImageChanges) == 0 {
			return errors.New("no imageChanges in the status yet")
		}
		return ok(bc.Status.ImageChanges)
	})
	return &bc
}

func TestImageChangeTrigger(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	c := startCluster(t)
	regClient, err := registry.New(registry.WithRetries(1), registry.WithRetryDelay(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	const interval = 300 * time.Millisecond
	c.startImagePoller(t, &ImageChangeReconciler{Registry: regClient, Interval: interval, MaxBackoff: time.Second})
	ctx := context.Background()
	base := reg.Host + "/base:v1"
	first := pushRandom(t, base)

	t.Run("new digest starts a build", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel)
		bc.Spec.Triggers = []kilnv1.BuildTrigger{{Type: kilnv1.TriggerImageChange,
			ImageChange: &kilnv1.ImageChangeTrigger{From: base, PollIntervalSeconds: ptr.To[int32](10)}}}
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		got := c.imageChanges(t, ns, "app", "the first digest to be recorded", func(st []kilnv1.ImageChangeStatus) error {
			if st[0].LastTriggeredDigest != first {
				return fmt.Errorf("status %+v, want digest %s", st[0], first)
			}
			return nil
		})
		if st := got.Status.ImageChanges[0]; st.From != base || st.LastCheckTime == nil || st.LastError != "" {
			t.Errorf("status %+v", st)
		}
		// Several polls later, still no build: the first digest only gets recorded.
		checked := got.Status.ImageChanges[0].LastCheckTime.Time
		c.imageChanges(t, ns, "app", "further checks", func(st []kilnv1.ImageChangeStatus) error {
			if !st[0].LastCheckTime.After(checked.Add(time.Second)) {
				return fmt.Errorf("last check %v", st[0].LastCheckTime)
			}
			return nil
		})
		if v := c.lastVersion(t, ns, "app"); v != 0 {
			t.Fatalf("the first observation started %d builds", v)
		}

		second := pushRandom(t, base)
		var b kilnv1.Build
		eventually(t, "a build for the new digest", func() error {
			return c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app-1"}, &b)
		})
		if tb := b.Spec.TriggeredBy; len(tb) != 1 || tb[0].Message != "Image change" || tb[0].ImageDigest != second {
			t.Errorf("triggeredBy %+v, want the digest %s", tb, second)
		}
		c.imageChanges(t, ns, "app", "the new digest to be recorded", func(st []kilnv1.ImageChangeStatus) error {
			if st[0].LastTriggeredDigest != second {
				return fmt.Errorf("status %+v, want digest %s", st[0], second)
			}
			return nil
		})
		// The same digest starts nothing more.
		time.Sleep(5 * interval)
		if v := c.lastVersion(t, ns, "app"); v != 1 {
			t.Errorf("%d builds for one change", v)
		}
	})

	t.Run("final FROM of the inline Dockerfile", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel, kilnv1.TriggerImageChange)
		bc.Spec.Source.Dockerfile = ptr.To("ARG BASE=" + base + "\nFROM $BASE AS runtime\nFROM golang:1.26 AS build\nFROM runtime\nRUN true\n")
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		c.imageChanges(t, ns, "app", "the Dockerfile's base to be watched", func(st []kilnv1.ImageChangeStatus) error {
			if st[0].From != base || st[0].LastTriggeredDigest == "" || st[0].LastError != "" {
				return fmt.Errorf("status %+v", st[0])
			}
			return nil
		})
	})

	t.Run("Dockerfile in git", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel, kilnv1.TriggerImageChange)
		bc.Spec.Source = kilnv1.BuildSource{Git: &kilnv1.GitSource{URI: "https://example.com/app.git"}}
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		c.imageChanges(t, ns, "app", "the error to be recorded", func(st []kilnv1.ImageChangeStatus) error {
			if st[0].LastError != "set imageChange.from: the Dockerfile is in git" || st[0].LastCheckTime != nil {
				return fmt.Errorf("status %+v", st[0])
			}
			return nil
		})
	})

	t.Run("unreachable registry", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel)
		bc.Spec.Triggers = []kilnv1.BuildTrigger{{Type: kilnv1.TriggerImageChange,
			ImageChange: &kilnv1.ImageChangeTrigger{From: "127.0.0.1:1/base:v1"}}}
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		got := c.imageChanges(t, ns, "app", "the error to be recorded", func(st []kilnv1.ImageChangeStatus) error {
			if st[0].LastError == "" || st[0].LastCheckTime == nil {
				return fmt.Errorf("status %+v", st[0])
			}
			return nil
		})
		if st := got.Status.ImageChanges[0]; st.LastTriggeredDigest != "" || !strings.Contains(st.LastError, "127.0.0.1:1") {
			t.Errorf("status %+v", st)
		}
		time.Sleep(5 * interval)
		if v := c.lastVersion(t, ns, "app"); v != 0 {
			t.Errorf("an unreachable registry started %d builds", v)
		}
	})

	t.Run("trigger removed", func(t *testing.T) {
		ns := c.namespace(t)
		bc := buildConfig(ns, "app", kilnv1.RunPolicyParallel)
		bc.Spec.Triggers = []kilnv1.BuildTrigger{{Type: kilnv1.TriggerImageChange, ImageChange: &kilnv1.ImageChangeTrigger{From: base}}}
		if err := c.client.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		c.imageChanges(t, ns, "app", "the digest to be recorded", func([]kilnv1.ImageChangeStatus) error { return nil })
		eventually(t, "removing the trigger", func() error {
			if err := c.client.Get(ctx, client.ObjectKeyFromObject(bc), bc); err != nil {
				return err
			}
			bc.Spec.Triggers = nil
			return c.client.Update(ctx, bc)
		})
		eventually(t, "the status to be cleared", func() error {
			if err := c.client.Get(ctx, client.ObjectKeyFromObject(bc), bc); err != nil {
				return err
			}
			if len(bc.Status.ImageChanges) != 0 {
				return fmt.Errorf("imageChanges %+v", bc.Status.ImageChanges)
			}
			return nil
		})
	})
}
