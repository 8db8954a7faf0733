package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// BuildReconciler runs each Build as one pod and keeps its status: it admits New builds under
// their BuildConfig's run policy, creates the pod, follows it, and records the outcome. All
// its state is in the API (the Build's status names its pod), so a restarted controller
// picks up where the last one stopped.
type BuildReconciler struct {
	Client client.Client
	// APIReader reads around the cache, to tell a pod that was deleted from one the cache
	// has not seen yet.
	APIReader client.Reader
	Pods      PodOptions
	Events    events.EventRecorder
	// Logs reads build pods' logs, which the controller saves as they come (see logs.go); nil
	// saves no logs.
	Logs LogSource
	// Now is the clock (tests move it); nil is time.Now.
	Now func() time.Time

	collectorOnce sync.Once
	collector     *logCollector
	// metrics, when set, records finished builds' durations.
	metrics *buildMetrics
}

// logs is the log collector, made on first use.
func (r *BuildReconciler) logs() *logCollector {
	r.collectorOnce.Do(func() {
		if r.Logs != nil {
			r.collector = newLogCollector(r.Client, r.APIReader, r.Logs)
		}
	})
	return r.collector
}

// +kubebuilder:rbac:groups=kiln.dev,resources=builds,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=kiln.dev,resources=builds/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Leader election records its events through the core API.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the reconciler: it watches Builds and their pods, and wakes a
// BuildConfig's queued builds when one of their siblings changes.
func (r *BuildReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&kilnv1.Build{}).
		Owns(&corev1.Pod{}).
		Watches(&kilnv1.Build{}, handler.EnqueueRequestsFromMapFunc(r.siblings)).
		Named("build").
		Complete(r)
}

func (r *BuildReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// siblings maps a build to the queued builds of its BuildConfig.
func (r *BuildReconciler) siblings(ctx context.Context, obj client.Object) []reconcile.Request {
	bc := obj.GetLabels()[kilnv1.BuildConfigLabel]
	if bc == "" {
		return nil
	}
	var list kilnv1.BuildList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingLabels{kilnv1.BuildConfigLabel: bc}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, b := range list.Items {
		if b.Name != obj.GetName() && !b.Status.Phase.Final() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: b.Namespace, Name: b.Name}})
		}
	}
	return out
}

// Reconcile moves one build along: New → Pending → Running → a final phase.
func (r *BuildReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var b kilnv1.Build
	if err := r.Client.Get(ctx, req.NamespacedName, &b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if b.Status.Phase.Final() {
		return ctrl.Result{}, nil
	}
	if b.Spec.Cancelled {
		return ctrl.Result{}, r.stop(ctx, &b, kilnv1.BuildPhaseCancelled, kilnv1.ReasonCancelled, "the build was cancelled")
	}
	switch b.Status.Phase {
	case "":
		b.Status.Phase = kilnv1.BuildPhaseNew
		return ctrl.Result{}, r.Client.Status().Update(ctx, &b)
	case kilnv1.BuildPhaseNew:
		return ctrl.Result{}, r.admit(ctx, &b)
	}
	return r.follow(ctx, &b)
}

// admit starts a New build when its run policy lets it, or cancels it when a newer build
// supersedes it.
func (r *BuildReconciler) admit(ctx context.Context, b *kilnv1.Build) error {
	if bcName := b.Labels[kilnv1.BuildConfigLabel]; bcName != "" {
		var bc kilnv1.BuildConfig
		policy := kilnv1.RunPolicySerial
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: bcName}, &bc); err == nil && bc.Spec.RunPolicy != "" {
			policy = bc.Spec.RunPolicy
		}
		var list kilnv1.BuildList
		if err := r.Client.List(ctx, &list, client.InNamespace(b.Namespace), client.MatchingLabels{kilnv1.BuildConfigLabel: bcName}); err != nil {
			return fmt.Errorf("listing the builds of %s: %w", bcName, err)
		}
		start, supersede := admit(policy, list.Items)
		if contains(supersede, b.Name) {
			return r.finish(ctx, b, kilnv1.BuildPhaseCancelled, kilnv1.ReasonSuperseded, "a newer build of "+bcName+" supersedes it (runPolicy SerialLatestOnly)")
		}
		if !contains(start, b.Name) {
			return nil // waits its turn; a sibling's change wakes it
		}
	}
	pod, err := BuildPod(b, r.Pods)
	if err != nil {
		return r.finish(ctx, b, kilnv1.BuildPhaseFailed, kilnv1.ReasonInvalidSpec, err.Error())
	}
	if err := controllerutil.SetControllerReference(b, pod, r.Client.Scheme()); err != nil {
		return err
	}
	if err := r.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		r.event(b, corev1.EventTypeWarning, "CannotCreatePod", err.Error())
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			return r.finish(ctx, b, kilnv1.BuildPhaseError, kilnv1.ReasonCannotCreatePod, err.Error())
		}
		return fmt.Errorf("creating the build pod: %w", err)
	}
	now := metav1.NewTime(r.now())
	b.Status.Phase, b.Status.PodName, b.Status.StartTimestamp = kilnv1.BuildPhasePending, pod.Name, &now
	r.event(b, corev1.EventTypeNormal, "BuildStarted", "created pod "+pod.Name)
	return r.Client.Status().Update(ctx, b)
}

// follow updates a Pending or Running build from its pod.
func (r *BuildReconciler) follow(ctx context.Context, b *kilnv1.Build) (ctrl.Result, error) {
	var pod corev1.Pod
	key := client.ObjectKey{Namespace: b.Namespace, Name: b.Status.PodName}
	err := r.Client.Get(ctx, key, &pod)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, &pod)
	}
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, r.finish(ctx, b, kilnv1.BuildPhaseError, kilnv1.ReasonPodDeleted, "the build pod "+key.Name+" was deleted")
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	r.logs().follow(ctx, b)
	before := b.Status.DeepCopy()
	o := podOutcome(&pod)
	if !o.phase.Final() && pod.DeletionTimestamp != nil {
		return ctrl.Result{}, r.finish(ctx, b, kilnv1.BuildPhaseError, kilnv1.ReasonPodDeleted, "the build pod "+pod.Name+" was deleted")
	}
	b.Status.Stages = stagesOf(o)
	if o.result != nil {
		b.Status.Output = kilnv1.BuildOutputStatus{Image: o.result.Image, Digest: o.result.Digest}
	}
	if o.phase.Final() {
		return ctrl.Result{}, r.finish(ctx, b, o.phase, o.reason, o.message)
	}
	if d := b.Spec.CompletionDeadlineSeconds; d != nil && b.Status.StartTimestamp != nil {
		deadline := b.Status.StartTimestamp.Add(time.Duration(*d) * time.Second)
		if !r.now().Before(deadline) {
			return ctrl.Result{}, r.stop(ctx, b, kilnv1.BuildPhaseFailed, kilnv1.ReasonDeadlineExceeded,
				fmt.Sprintf("the build ran longer than its completionDeadlineSeconds (%d)", *d))
		}
		return ctrl.Result{RequeueAfter: deadline.Sub(r.now())}, r.setPhase(ctx, b, before, o.phase)
	}
	return ctrl.Result{}, r.setPhase(ctx, b, before, o.phase)
}

// setPhase records a non-final phase, writing the status only when it changed.
func (r *BuildReconciler) setPhase(ctx context.Context, b *kilnv1.Build, before *kilnv1.BuildStatus, phase kilnv1.BuildPhase) error {
	if phase == kilnv1.BuildPhaseRunning && b.Status.Phase != phase {
		r.event(b, corev1.EventTypeNormal, "BuildRunning", "the build pod is running")
	}
	b.Status.Phase = phase
	if equality.Semantic.DeepEqual(before, &b.Status) {
		return nil
	}
	return r.Client.Status().Update(ctx, b)
}

// stop deletes the build's pod, if any, and ends the build.
func (r *BuildReconciler) stop(ctx context.Context, b *kilnv1.Build, phase kilnv1.BuildPhase, reason kilnv1.BuildReason, msg string) error {
	if b.Status.PodName != "" {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: b.Namespace, Name: b.Status.PodName}}
		if err := r.Client.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting the build pod %s: %w", pod.Name, err)
		}
	}
	return r.finish(ctx, b, phase, reason, msg)
}

// finish records a final phase.
func (r *BuildReconciler) finish(ctx context.Context, b *kilnv1.Build, phase kilnv1.BuildPhase, reason kilnv1.BuildReason, msg string) error {
	now := metav1.NewTime(r.now())
	b.Status.Phase, b.Status.Reason, b.Status.Message = phase, reason, msg
	b.Status.CompletionTimestamp = &now
	if s := b.Status.StartTimestamp; s != nil {
		b.Status.Duration = &metav1.Duration{Duration: now.Sub(s.Time).Round(time.Millisecond)}
	}
	cond := metav1.Condition{Type: "Succeeded", Status: metav1.ConditionFalse, Reason: string(reason), Message: msg, ObservedGeneration: b.Generation}
	eventType, eventReason := corev1.EventTypeWarning, "Build"+string(phase)
	if phase == kilnv1.BuildPhaseComplete {
		cond.Status, cond.Reason = metav1.ConditionTrue, "Complete"
		eventType = corev1.EventTypeNormal
		msg = "pushed " + b.Status.Output.Image + "@" + b.Status.Output.Digest
	}
	meta.SetStatusCondition(&b.Status.Conditions, cond)
	if phase != kilnv1.BuildPhaseComplete {
		b.Status.LogSnippet = logTail(ctx, r.APIReader, b, snippetLines)
	}
	log.FromContext(ctx).Info("build ended", "phase", phase, "reason", reason)
	r.metrics.observe(b)
	r.event(b, eventType, eventReason, msg)
	return r.Client.Status().Update(ctx, b)
}

// event records a Kubernetes Event about b.
func (r *BuildReconciler) event(b *kilnv1.Build, eventType, reason, msg string) {
	if r.Events != nil {
		r.Events.Eventf(b, nil, eventType, reason, "Reconcile", "%s", msg)
	}
}

// stagesOf are the build's stages: fetching the source, then the builder's own.
func stagesOf(o outcome) []kilnv1.StageInfo {
	var out []kilnv1.StageInfo
	if o.fetch != nil {
		out = append(out, *o.fetch)
	}
	if o.result != nil {
		out = append(out, o.result.Stages...)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
