package controller

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// buildMetrics are the controller's Prometheus metrics, served on the manager's metrics
// endpoint: builds by phase and the queue (read from the cache when scraped), and the
// durations of finished builds.
type buildMetrics struct {
	reader   client.Reader
	phases   *prometheus.Desc
	queue    *prometheus.Desc
	duration *prometheus.HistogramVec
}

func newBuildMetrics(r client.Reader) *buildMetrics {
	return &buildMetrics{
		reader: r,
		phases: prometheus.NewDesc("kiln_builds", "Builds by phase.", []string{"phase"}, nil),
		queue:  prometheus.NewDesc("kiln_build_queue_length", "Builds waiting to start (phase New).", nil, nil),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_build_duration_seconds",
			Help:    "Duration of finished builds, from pod creation to the final phase.",
			Buckets: prometheus.ExponentialBuckets(5, 2, 12), // 5 s to about 3 h
		}, []string{"phase", "reason"}),
	}
}

// register adds the metrics to controller-runtime's registry. A second controller in the
// same process (tests restart it) takes over the first one's metrics.
func (m *buildMetrics) register() error {
	metrics.Registry.Unregister(m)
	var already prometheus.AlreadyRegisteredError
	if err := metrics.Registry.Register(m); err != nil && !errors.As(err, &already) {
		return err
	}
	if err := metrics.Registry.Register(m.duration); errors.As(err, &already) {
		m.duration = already.ExistingCollector.(*prometheus.HistogramVec)
	} else if err != nil {
		return err
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *buildMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.phases
	ch <- m.queue
}

// Collect implements prometheus.Collector.
func (m *buildMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list kilnv1.BuildList
	if err := m.reader.List(ctx, &list); err != nil {
		return
	}
	counts := map[kilnv1.BuildPhase]int{}
	for _, p := range []kilnv1.BuildPhase{kilnv1.BuildPhaseNew, kilnv1.BuildPhasePending, kilnv1.BuildPhaseRunning,
		kilnv1.BuildPhaseComplete, kilnv1.BuildPhaseFailed, kilnv1.BuildPhaseError, kilnv1.BuildPhaseCancelled} {
		counts[p] = 0
	}
	for _, b := range list.Items {
		p := b.Status.Phase
		if p == "" {
			p = kilnv1.BuildPhaseNew
		}
		counts[p]++
	}
	for p, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.phases, prometheus.GaugeValue, float64(n), string(p))
	}
	ch <- prometheus.MustNewConstMetric(m.queue, prometheus.GaugeValue, float64(counts[kilnv1.BuildPhaseNew]))
}

// observe records a finished build's duration.
func (m *buildMetrics) observe(b *kilnv1.Build) {
	if m == nil || b.Status.Duration == nil {
		return
	}
	m.duration.WithLabelValues(string(b.Status.Phase), string(b.Status.Reason)).Observe(b.Status.Duration.Seconds())
}
