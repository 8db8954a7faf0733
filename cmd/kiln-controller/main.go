// Command kiln-controller runs kiln's Kubernetes controller: it turns BuildConfigs into Builds
// and runs each Build as one unprivileged pod of the kiln builder image.
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/controller"
	"github.com/kiln-build/kiln/internal/registry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "kiln-controller: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var metricsAddr, probeAddr, storeLimit string
	var leaderElect bool
	var webhookAddr string
	var insecure []string
	var pods controller.PodOptions
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the health and readiness probes")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader, so that several replicas can run")
	flag.StringVar(&pods.BuilderImage, "builder-image", "", "the kiln image build pods run (required)")
	flag.StringVar(&pods.SeccompProfile, "seccomp-profile", "kiln/kiln-seccomp.json",
		"Localhost seccomp profile of build pods, relative to the kubelet's seccomp directory; empty for RuntimeDefault")
	flag.StringVar(&storeLimit, "store-size-limit", "20Gi", "size limit of the emptyDir that holds a build's store")
	flag.BoolVar(&pods.UnmaskedProc, "unmasked-proc", true,
		"give build pods procMount: Unmasked, so that RUN steps get a /proc of their own that shows none of kiln's processes "+
			"(the ProcMountType feature; where the cluster lacks it the field is dropped and RUN steps see a read-only view of the pod's /proc)")
	flag.StringVar(&webhookAddr, "webhook-bind-address", ":8443",
		`address of the Generic and GitHub webhook server (plain HTTP: TLS is terminated by the Service or ingress); "0" turns it off`)
	flag.Func("insecure-registry", "allow plain HTTP or unverified TLS for this registry, in the controller's base-image checks and in build pods (repeatable)",
		func(s string) error { insecure = append(insecure, s); return nil })
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if pods.BuilderImage == "" {
		return fmt.Errorf("--builder-image is required")
	}
	limit, err := resource.ParseQuantity(storeLimit)
	if err != nil {
		return fmt.Errorf("--store-size-limit %q: %w", storeLimit, err)
	}
	pods.StoreSizeLimit = limit
	pods.InsecureRegistries = insecure

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("finding the cluster: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "kiln-controller.kiln.dev",
	})
	if err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("making a clientset: %w", err)
	}
	reg, err := registry.New(registry.WithInsecure(insecure...), registry.WithUserAgent("kiln-controller"))
	if err != nil {
		return fmt.Errorf("setting up the registry client: %w", err)
	}
	triggers := controller.TriggerOptions{WebhookBindAddress: webhookAddr, Registry: reg}
	if err := controller.Setup(mgr, pods, controller.PodLogs{Clientset: clientset}, triggers); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}
