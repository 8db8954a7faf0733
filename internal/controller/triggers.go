package controller

import (
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kiln-build/kiln/internal/registry"
)

// TriggerOptions configure the triggers that start builds from outside the cluster: the
// Generic and GitHub webhooks, and the ImageChange poller.
type TriggerOptions struct {
	// WebhookBindAddress is where the webhook server listens, "host:port", in plain HTTP
	// (TLS is terminated in front of it). Empty or "0" serves no webhooks.
	WebhookBindAddress string
	// Registry reads the digests of the images ImageChange triggers watch; nil is a
	// registry client with the default settings.
	Registry DigestResolver
}

// SetupTriggers adds the webhook server and the ImageChange poller to mgr.
func SetupTriggers(mgr ctrl.Manager, opts TriggerOptions) error {
	if addr := opts.WebhookBindAddress; addr != "" && addr != "0" {
		hooks := &WebhookHandler{Client: mgr.GetClient(), Secrets: mgr.GetAPIReader(), Log: mgr.GetLogger().WithName("webhooks")}
		if err := mgr.Add(NewWebhookServer(addr, hooks)); err != nil {
			return fmt.Errorf("adding the webhook server on %s: %w", addr, err)
		}
	}
	reg := opts.Registry
	if reg == nil {
		c, err := registry.New()
		if err != nil {
			return fmt.Errorf("setting up the registry client of the ImageChange trigger: %w", err)
		}
		reg = c
	}
	images := &ImageChangeReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Registry: reg}
	if err := images.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the imagechange controller: %w", err)
	}
	return nil
}
