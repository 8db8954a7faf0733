package controller

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
)

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get

// Setup registers kiln's reconcilers with mgr; logs reads build pods' logs (nil saves none),
// and triggers configures the webhook server and the ImageChange poller.
func Setup(mgr ctrl.Manager, pods PodOptions, logs LogSource, triggers TriggerOptions) error {
	builds := &BuildReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Pods:      pods,
		Events:    mgr.GetEventRecorder("kiln-controller"),
		Logs:      logs,
	}
	m := newBuildMetrics(mgr.GetClient())
	if err := m.register(); err != nil {
		return fmt.Errorf("registering the build metrics: %w", err)
	}
	builds.metrics = m
	if err := builds.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the build controller: %w", err)
	}
	if err := (&BuildConfigReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the buildconfig controller: %w", err)
	}
	return SetupTriggers(mgr, triggers)
}
