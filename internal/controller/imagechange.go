package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// DigestResolver reads the manifest digest an image reference points at in its registry.
// *registry.Client is one.
type DigestResolver interface {
	Digest(ctx context.Context, ref string) (v1.Hash, error)
}

// Timing of the ImageChange trigger.
const (
	// DefaultImagePollInterval is the mean interval between checks of a base image when the
	// trigger does not set PollIntervalSeconds.
	DefaultImagePollInterval = 300 * time.Second
	// DefaultImagePollMaxBackoff caps the interval between checks that keep failing.
	DefaultImagePollMaxBackoff = time.Hour
	// minImagePollInterval is the API's minimum of PollIntervalSeconds, enforced again here
	// for objects that bypassed validation.
	minImagePollInterval = 10 * time.Second
	// imagePollJitter spreads the checks: each interval is drawn within ±20% of its mean.
	imagePollJitter = 0.2
	// imageCheckTimeout bounds one check, the registry client's own retries included.
	imageCheckTimeout = 2 * time.Minute
	// imageChangeWorkers is how many BuildConfigs are checked at once, so that a slow
	// registry does not hold up the others.
	imageChangeWorkers = 4
)

// ImageChangeReconciler runs the ImageChange triggers: for each BuildConfig with one, it
// polls the digest of the watched image (the trigger's From, else the base of the inline
// Dockerfile's final stage) and starts a build when the digest changes. The first digest it
// sees is only recorded, since the ConfigChange trigger covers the first build. What it saw
// is in the BuildConfig's status.imageChanges, one entry per ImageChange trigger in order;
// the schedule (when each image is due, how many checks failed in a row) is kept in memory,
// and a restarted controller resumes it from the entries' lastCheckTime.
//
// It runs only on the elected leader.
type ImageChangeReconciler struct {
	// Client reads BuildConfigs and starts builds.
	Client client.Client
	// APIReader reads a BuildConfig afresh before its status is written, so a conflict is
	// not retried against a stale cache; nil uses Client.
	APIReader client.Reader
	// Registry reads the digests; the controller's credentials and registry settings apply.
	Registry DigestResolver
	// Interval, when set, replaces every trigger's PollIntervalSeconds. It is for tests,
	// which cannot wait the 10 s minimum the API allows.
	Interval time.Duration
	// MaxBackoff caps the interval between failing checks; 0 is DefaultImagePollMaxBackoff.
	MaxBackoff time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu sync.Mutex
	// polls are the schedules of each BuildConfig's triggers, by BuildConfig and pollKey.
	polls map[types.NamespacedName]map[string]*pollState
}

// pollState is the schedule of one watched image.
type pollState struct {
	// next is when the image is due to be checked.
	next time.Time
	// failures counts the checks that failed in a row.
	failures int
}

// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=kiln.dev,resources=buildconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=kiln.dev,resources=builds,verbs=get;list;watch;create

// SetupWithManager registers the reconciler. Only spec changes wake it (besides its own
// timers): the status writes of builds and of its own checks do not.
func (r *ImageChangeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&kilnv1.BuildConfig{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: imageChangeWorkers}).
		Named("imagechange").
		Complete(r)
}

// Reconcile checks the BuildConfig's watched images that are due, starts a build for each
// one whose digest changed, records what it saw, and asks to be called again when the next
// image is due.
func (r *ImageChangeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var bc kilnv1.BuildConfig
	if err := r.Client.Get(ctx, req.NamespacedName, &bc); err != nil {
		if apierrors.IsNotFound(err) {
			r.setPolls(req.NamespacedName, nil)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var triggers []*kilnv1.ImageChangeTrigger
	for i := range bc.Spec.Triggers {
		if tr := &bc.Spec.Triggers[i]; tr.Type == kilnv1.TriggerImageChange {
			if tr.ImageChange == nil {
				triggers = append(triggers, &kilnv1.ImageChangeTrigger{})
			} else {
				triggers = append(triggers, tr.ImageChange)
			}
		}
	}

	now := r.now()
	old := r.getPolls(req.NamespacedName)
	polls := map[string]*pollState{}
	statuses := make([]kilnv1.ImageChangeStatus, 0, len(triggers))
	var wait time.Duration
	for i, tr := range triggers {
		from, err := watchedImage(&bc, tr)
		prev := previousCheck(bc.Status.ImageChanges, i, from)
		if err != nil {
			// Nothing to poll until the spec changes, which wakes the reconciler.
			statuses = append(statuses, kilnv1.ImageChangeStatus{From: from, LastError: err.Error()})
			continue
		}
		st := kilnv1.ImageChangeStatus{From: from}
		if prev != nil {
			st = *prev.DeepCopy()
		}
		interval := r.interval(tr)
		key := pollKey(i, from)
		ps := old[key]
		if ps == nil {
			ps = &pollState{}
			if st.LastCheckTime != nil {
				ps.next = st.LastCheckTime.Add(jitter(interval))
			}
		}
		if !now.Before(ps.next) {
			r.check(ctx, &bc, &st, ps, interval)
		}
		polls[key] = ps
		if d := ps.next.Sub(now); wait == 0 || d < wait {
			wait = max(d, time.Millisecond)
		}
		statuses = append(statuses, st)
	}
	r.setPolls(req.NamespacedName, polls)

	if len(statuses) == 0 {
		statuses = nil
	}
	if !equality.Semantic.DeepEqual(statuses, bc.Status.ImageChanges) {
		if err := r.record(ctx, req.NamespacedName, statuses); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

// check asks the registry for the digest of st.From, starts a build if it changed since the
// last one, and updates st and the schedule ps.
func (r *ImageChangeReconciler) check(ctx context.Context, bc *kilnv1.BuildConfig, st *kilnv1.ImageChangeStatus, ps *pollState, interval time.Duration) {
	logger := log.FromContext(ctx).WithValues("from", st.From)
	cctx, cancel := context.WithTimeout(ctx, imageCheckTimeout)
	hash, err := r.Registry.Digest(cctx, st.From)
	cancel()
	now := r.now()
	checked := metav1.NewTime(now).Rfc3339Copy()
	st.LastCheckTime = &checked
	if err != nil {
		r.failed(ps, now, interval)
		st.LastError = err.Error()
		logger.Info("checking the base image of an ImageChange trigger failed", "error", err.Error(), "failures", ps.failures)
		return
	}
	digest := hash.String()
	if st.LastTriggeredDigest != "" && st.LastTriggeredDigest != digest {
		b, err := r.start(ctx, bc, digest)
		if err != nil {
			// The digest stays unrecorded, so the next check tries again.
			r.failed(ps, now, interval)
			st.LastError = err.Error()
			logger.Error(err, "starting a build for a new base image digest", "digest", digest)
			return
		}
		logger.Info("started a build for a new base image digest", "build", b, "digest", digest, "previous", st.LastTriggeredDigest)
	}
	ps.failures, ps.next = 0, now.Add(jitter(interval))
	st.LastTriggeredDigest, st.LastError = digest, ""
}

// start starts a build of bc for digest, unless its newest build was already started for
// that digest (when recording the digest failed after the build was started).
func (r *ImageChangeReconciler) start(ctx context.Context, bc *kilnv1.BuildConfig, digest string) (string, error) {
	var list kilnv1.BuildList
	if err := r.Client.List(ctx, &list, client.InNamespace(bc.Namespace), client.MatchingLabels{kilnv1.BuildConfigLabel: bc.Name}); err != nil {
		return "", fmt.Errorf("listing the builds of %s/%s: %w", bc.Namespace, bc.Name, err)
	}
	var newest *kilnv1.Build
	for i := range list.Items {
		if newest == nil || buildNumber(&list.Items[i]) > buildNumber(newest) {
			newest = &list.Items[i]
		}
	}
	if newest != nil {
		for _, c := range newest.Spec.TriggeredBy {
			if c.ImageDigest == digest {
				return newest.Name, nil
			}
		}
	}
	b, err := Instantiate(ctx, r.Client, client.ObjectKeyFromObject(bc), kilnv1.BuildTriggerCause{Message: "Image change", ImageDigest: digest}, false)
	if err != nil {
		return "", fmt.Errorf("starting a build of %s/%s for base image digest %s: %w", bc.Namespace, bc.Name, digest, err)
	}
	return b.Name, nil
}

// failed schedules the next check after a failure: the interval doubles with each failure in
// a row, up to MaxBackoff (but never below the interval itself).
func (r *ImageChangeReconciler) failed(ps *pollState, now time.Time, interval time.Duration) {
	ps.failures++
	ps.next = now.Add(jitter(backoff(interval, r.maxBackoff(), ps.failures)))
}

// record writes statuses as the BuildConfig's status.imageChanges, retrying on conflict.
func (r *ImageChangeReconciler) record(ctx context.Context, key types.NamespacedName, statuses []kilnv1.ImageChangeStatus) error {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var bc kilnv1.BuildConfig
		if err := reader.Get(ctx, key, &bc); err != nil {
			return err
		}
		if equality.Semantic.DeepEqual(statuses, bc.Status.ImageChanges) {
			return nil
		}
		bc.Status.ImageChanges = statuses
		return r.Client.Status().Update(ctx, &bc)
	})
	if err = client.IgnoreNotFound(err); err != nil {
		return fmt.Errorf("recording the image checks of %s: %w", key, err)
	}
	return nil
}

// interval is the mean interval between checks of tr's image.
func (r *ImageChangeReconciler) interval(tr *kilnv1.ImageChangeTrigger) time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	if tr.PollIntervalSeconds != nil {
		return max(time.Duration(*tr.PollIntervalSeconds)*time.Second, minImagePollInterval)
	}
	return DefaultImagePollInterval
}

func (r *ImageChangeReconciler) maxBackoff() time.Duration {
	if r.MaxBackoff > 0 {
		return r.MaxBackoff
	}
	return DefaultImagePollMaxBackoff
}

func (r *ImageChangeReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// getPolls returns the schedules of a BuildConfig's triggers.
func (r *ImageChangeReconciler) getPolls(key types.NamespacedName) map[string]*pollState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.polls[key]
}

// setPolls replaces the schedules of a BuildConfig's triggers; nil forgets them.
func (r *ImageChangeReconciler) setPolls(key types.NamespacedName, polls map[string]*pollState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(polls) == 0 {
		delete(r.polls, key)
		return
	}
	if r.polls == nil {
		r.polls = map[types.NamespacedName]map[string]*pollState{}
	}
	r.polls[key] = polls
}

// pollKey names the schedule of the i-th ImageChange trigger watching from: a changed From
// starts afresh.
func pollKey(i int, from string) string {
	return strconv.Itoa(i) + "\x00" + from
}

// previousCheck is what the i-th ImageChange trigger saw of from before: the i-th entry if it
// watched the same image, else another entry for that image (the triggers were reordered).
func previousCheck(prev []kilnv1.ImageChangeStatus, i int, from string) *kilnv1.ImageChangeStatus {
	if from == "" {
		return nil
	}
	if i < len(prev) && prev[i].From == from {
		return &prev[i]
	}
	for j := range prev {
		if prev[j].From == from {
			return &prev[j]
		}
	}
	return nil
}

// backoff is the mean interval before the next check after failures failed checks in a row:
// interval doubled per failure, capped at maxBackoff but never below interval.
func backoff(interval, maxBackoff time.Duration, failures int) time.Duration {
	d := interval
	for i := 0; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	return max(min(d, maxBackoff), interval)
}

// jitter draws a duration within ±20% of d.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 - imagePollJitter + 2*imagePollJitter*rand.Float64()))
}
