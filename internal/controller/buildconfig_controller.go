package controller

import (
	"context"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// BuildConfigReconciler starts builds for the ConfigChange trigger and prunes each
// BuildConfig's history of finished builds.
type BuildConfigReconciler struct {
	Client client.Client
}

// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kiln.dev,resources=builds,verbs=get;list;watch;create;delete

// SetupWithManager registers the reconciler; a build's change wakes its BuildConfig, which
// prunes the history when a build ends.
func (r *BuildConfigReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&kilnv1.BuildConfig{}).
		Watches(&kilnv1.Build{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if bc := o.GetLabels()[kilnv1.BuildConfigLabel]; bc != "" {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: bc}}}
			}
			return nil
		})).
		Named("buildconfig").
		Complete(r)
}

// Reconcile starts a build when the spec changed under a ConfigChange trigger, and deletes
// finished builds beyond the history limits.
func (r *BuildConfigReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var bc kilnv1.BuildConfig
	if err := r.Client.Get(ctx, req.NamespacedName, &bc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if bc.Status.ObservedGeneration != bc.Generation {
		if hasTrigger(&bc, kilnv1.TriggerConfigChange) {
			msg := "Build configuration change"
			if bc.Status.ObservedGeneration == 0 {
				msg = "Build configuration created"
			}
			if _, err := Instantiate(ctx, r.Client, req.NamespacedName, kilnv1.BuildTriggerCause{Message: msg}, true); err != nil {
				return ctrl.Result{}, err
			}
		} else if err := r.observe(ctx, &bc); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, r.prune(ctx, &bc)
}

// observe records that the current generation needs no build.
func (r *BuildConfigReconciler) observe(ctx context.Context, bc *kilnv1.BuildConfig) error {
	bc.Status.ObservedGeneration = bc.Generation
	return r.Client.Status().Update(ctx, bc)
}

// prune deletes the finished builds beyond the history limits (their pods go with them).
func (r *BuildConfigReconciler) prune(ctx context.Context, bc *kilnv1.BuildConfig) error {
	var list kilnv1.BuildList
	if err := r.Client.List(ctx, &list, client.InNamespace(bc.Namespace), client.MatchingLabels{kilnv1.BuildConfigLabel: bc.Name}); err != nil {
		return fmt.Errorf("listing the builds of %s: %w", bc.Name, err)
	}
	ok, failed := int32(5), int32(5)
	if l := bc.Spec.SuccessfulBuildsHistoryLimit; l != nil {
		ok = *l
	}
	if l := bc.Spec.FailedBuildsHistoryLimit; l != nil {
		failed = *l
	}
	for _, name := range prune(list.Items, ok, failed) {
		b := &kilnv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: bc.Namespace, Name: name}}
		if err := r.Client.Delete(ctx, b, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("pruning build %s: %w", name, err)
		}
	}
	return nil
}

func hasTrigger(bc *kilnv1.BuildConfig, t kilnv1.TriggerType) bool {
	for _, tr := range bc.Spec.Triggers {
		if tr.Type == t {
			return true
		}
	}
	return false
}

// Instantiate starts build number lastVersion+1 of the BuildConfig key names, with a copy of
// its spec, for cause. The number is taken by updating the BuildConfig's status first, so two
// starters never get the same one. configChange marks the current generation as built. The
// controller's triggers and `kiln start-build` both start builds this way. With configChange,
// a generation already marked built starts nothing and gives a nil build: two reconciles of one
// change, the second reading a stale cache, start one build (the status update that marks the
// generation conflicts for the second, which then reads it marked).
// Each edit changes the new build before it is created (kiln start-build --env).
func Instantiate(ctx context.Context, c client.Client, key client.ObjectKey, cause kilnv1.BuildTriggerCause, configChange bool, edits ...func(*kilnv1.Build)) (*kilnv1.Build, error) {
	var bc kilnv1.BuildConfig
	built := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, key, &bc); err != nil {
			return err
		}
		if built = configChange && bc.Status.ObservedGeneration == bc.Generation; built {
			return nil
		}
		bc.Status.LastVersion++
		if configChange {
			bc.Status.ObservedGeneration = bc.Generation
		}
		return c.Status().Update(ctx, &bc)
	})
	if err != nil {
		return nil, fmt.Errorf("numbering a new build of %s: %w", key, err)
	}
	if built {
		return nil, nil
	}
	n := bc.Status.LastVersion
	b := &kilnv1.Build{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%s-%d", bc.Name, n),
			Namespace:   bc.Namespace,
			Labels:      map[string]string{kilnv1.BuildConfigLabel: bc.Name},
			Annotations: map[string]string{kilnv1.BuildNumberAnnotation: strconv.FormatInt(n, 10)},
		},
		Spec: kilnv1.BuildSpec{CommonSpec: *bc.Spec.CommonSpec.DeepCopy(), TriggeredBy: []kilnv1.BuildTriggerCause{cause}},
	}
	for _, edit := range edits {
		edit(b)
	}
	if err := controllerutil.SetOwnerReference(&bc, b, c.Scheme()); err != nil {
		return nil, err
	}
	if err := c.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating build %s: %w", b.Name, err)
	}
	return b, nil
}
