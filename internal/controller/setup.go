package controller

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
)

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Setup registers kiln's reconcilers with mgr.
func Setup(mgr ctrl.Manager, pods PodOptions) error {
	builds := &BuildReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Pods:      pods,
		Events:    mgr.GetEventRecorder("kiln-controller"),
	}
	if err := builds.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the build controller: %w", err)
	}
	if err := (&BuildConfigReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the buildconfig controller: %w", err)
	}
	return nil
}
