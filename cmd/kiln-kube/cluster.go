package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/remotecommand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/archive"
	"github.com/kiln-build/kiln/internal/controller"
)

// clusterFlags are how the client verbs find the cluster, as kubectl does.
type clusterFlags struct {
	kubeconfig, namespace string
}

func (f *clusterFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "namespace (default: the kubeconfig's)")
}

// cluster is a connection to the cluster for the client verbs.
type cluster struct {
	config    *rest.Config
	client    client.Client
	clientset kubernetes.Interface
	namespace string
}

func (f *clusterFlags) connect() (*cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if f.kubeconfig != "" {
		rules.ExplicitPath = f.kubeconfig
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: f.namespace}})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	ns := f.namespace
	if ns == "" {
		if ns, _, err = loader.Namespace(); err != nil {
			return nil, fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
		}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Host, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &cluster{config: cfg, client: c, clientset: cs, namespace: ns}, nil
}

func newGetCommand() *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "get builds [BUILDCONFIG]",
		Short: "List builds, newest last",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "builds" && args[0] != "build" {
				return fmt.Errorf("kiln get knows builds, not %q", args[0])
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			opts := []client.ListOption{client.InNamespace(c.namespace)}
			if len(args) == 2 {
				opts = append(opts, client.MatchingLabels{kilnv1.BuildConfigLabel: args[1]})
			}
			var list kilnv1.BuildList
			if err := c.client.List(cmd.Context(), &list, opts...); err != nil {
				return fmt.Errorf("listing builds in %s: %w", c.namespace, err)
			}
			return printBuilds(os.Stdout, list.Items)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// printBuilds writes builds as a table, oldest first.
func printBuilds(w io.Writer, builds []kilnv1.Build) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPHASE\tREASON\tDIGEST\tSTARTED\tDURATION")
	for _, b := range sortedBuilds(builds) {
		started, duration := "", ""
		if s := b.Status.StartTimestamp; s != nil {
			started = s.UTC().Format(time.RFC3339)
		}
		if d := b.Status.Duration; d != nil {
			duration = d.Duration.String()
		}
		digest := b.Status.Output.Digest
		if len(digest) > 19 {
			digest = digest[:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, b.Status.Phase, b.Status.Reason, digest, started, duration)
	}
	return tw.Flush()
}

// sortedBuilds orders builds by creation, then name.
func sortedBuilds(builds []kilnv1.Build) []kilnv1.Build {
	out := append([]kilnv1.Build(nil), builds...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && less(out[j], out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func less(a, b kilnv1.Build) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func newCancelBuildCommand() *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "cancel-build NAME",
		Short: "Cancel a build",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			var b kilnv1.Build
			if err := c.client.Get(cmd.Context(), client.ObjectKey{Namespace: c.namespace, Name: args[0]}, &b); err != nil {
				return fmt.Errorf("finding build %s: %w", args[0], err)
			}
			if b.Status.Phase.Final() {
				return fmt.Errorf("build %s already ended: %s", b.Name, b.Status.Phase)
			}
			patch := client.MergeFrom(b.DeepCopy())
			b.Spec.Cancelled = true
			if err := c.client.Patch(cmd.Context(), &b, patch); err != nil {
				return fmt.Errorf("cancelling build %s: %w", b.Name, err)
			}
			fmt.Printf("build %s cancelled\n", b.Name)
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func newLogsCommand() *cobra.Command {
	var f clusterFlags
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs build/NAME",
		Short: "Print a build's log: live from its pod while it runs, else the log the controller saved",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := strings.TrimPrefix(strings.TrimPrefix(args[0], "builds/"), "build/")
			c, err := f.connect()
			if err != nil {
				return err
			}
			if err := c.printLog(cmd.Context(), name, follow, os.Stdout); err != nil || !follow {
				return err
			}
			return c.outcome(cmd.Context(), name)
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log of a running build until it ends (exit status 1 unless it ends Complete)")
	return cmd
}

// outcome waits (a minute at most) for the build's phase to be final once its log has ended,
// and turns anything but Complete into an error, so that a followed build's exit status says
// how it ended.
func (c *cluster) outcome(ctx context.Context, name string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var b kilnv1.Build
		if err := c.client.Get(ctx, client.ObjectKey{Namespace: c.namespace, Name: name}, &b); err != nil {
			return fmt.Errorf("reading the outcome of build %s: %w", name, err)
		}
		switch {
		case b.Status.Phase == kilnv1.BuildPhaseComplete:
			return nil
		case b.Status.Phase.Final():
			return fmt.Errorf("build %s ended %s (%s): %s", name, b.Status.Phase, b.Status.Reason, b.Status.Message)
		case time.Now().After(deadline):
			return fmt.Errorf("build %s is still %s a minute after its log ended", name, b.Status.Phase)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// printLog writes a build's log to w.
func (c *cluster) printLog(ctx context.Context, name string, follow bool, w io.Writer) error {
	var b kilnv1.Build
	if err := c.client.Get(ctx, client.ObjectKey{Namespace: c.namespace, Name: name}, &b); err != nil {
		return fmt.Errorf("finding build %s: %w", name, err)
	}
	if !b.Status.Phase.Final() && b.Status.PodName != "" {
		err := c.streamPodLog(ctx, b.Status.PodName, follow, w)
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
	}
	complete, err := controller.WriteSavedLog(ctx, c.client, c.namespace, name, w)
	if err != nil {
		return err
	}
	if !complete {
		fmt.Fprintf(os.Stderr, "kiln: the saved log of %s is not complete (phase %s)\n", name, b.Status.Phase)
	}
	return nil
}

// streamPodLog copies the logs of a build pod's containers, in order. Following, it waits for
// each container to start: the kubelet refuses the log of a container that has not started
// yet, and the build container starts only once fetch-source has ended.
func (c *cluster) streamPodLog(ctx context.Context, pod string, follow bool, w io.Writer) error {
	for _, container := range []string{"fetch-source", "build"} {
		if follow {
			started, err := c.waitStarted(ctx, pod, container)
			if err != nil {
				return err
			}
			if !started {
				continue // the pod ended without running it
			}
		}
		rc, err := c.clientset.CoreV1().Pods(c.namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: follow}).Stream(ctx)
		if apierrors.IsBadRequest(err) {
			continue // the container has not started: nothing to show yet
		}
		if err != nil {
			return err
		}
		_, err = io.Copy(w, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("reading the log of %s/%s: %w", pod, container, err)
		}
	}
	return nil
}

// waitStarted waits until a container of pod has started (it runs or has ended); false when
// the pod ended, or is being deleted, without starting it.
func (c *cluster) waitStarted(ctx context.Context, pod, container string) (bool, error) {
	for {
		p, err := c.clientset.CoreV1().Pods(c.namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if cs.Name == container && (cs.State.Running != nil || cs.State.Terminated != nil) {
				return true, nil
			}
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func newStartBuildCommand() *cobra.Command {
	var f clusterFlags
	var fromDir, fromFile string
	var follow bool
	var env []string
	cmd := &cobra.Command{
		Use:   "start-build BUILDCONFIG [--from-dir DIR | --from-file FILE] [--follow] [--env K=V]...",
		Short: "Start a build of a BuildConfig, uploading the context for a binary source",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fromDir != "" && fromFile != "" {
				return errors.New("give --from-dir or --from-file, not both")
			}
			var vars []corev1.EnvVar
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--env %q: use K=V", kv)
				}
				vars = append(vars, corev1.EnvVar{Name: k, Value: v})
			}
			c, err := f.connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			key := client.ObjectKey{Namespace: c.namespace, Name: args[0]}
			b, err := controller.Instantiate(ctx, c.client, key, kilnv1.BuildTriggerCause{Message: "Manually triggered"}, false, func(b *kilnv1.Build) {
				if d := b.Spec.Strategy.Docker; d != nil {
					d.Env = append(d.Env, vars...)
				}
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "build %s started\n", b.Name)
			if fromDir != "" || fromFile != "" {
				if b.Spec.Source.Binary == nil {
					return fmt.Errorf("buildconfig %s has no binary source: --from-dir and --from-file need spec.source.binary", args[0])
				}
				if err := c.upload(ctx, b, fromDir, fromFile); err != nil {
					return err
				}
			}
			if follow {
				if err := c.printLog(ctx, b.Name, true, os.Stdout); err != nil {
					return err
				}
				return c.outcome(ctx, b.Name)
			}
			fmt.Println(b.Name)
			return nil
		},
	}
	f.register(cmd.Flags())
	fl := cmd.Flags()
	fl.StringVar(&fromDir, "from-dir", "", "upload this directory as the build context")
	fl.StringVar(&fromFile, "from-file", "", "upload this file as the build's source")
	fl.BoolVar(&follow, "follow", false, "follow the build's log until it ends")
	fl.StringArrayVar(&env, "env", nil, "set an environment variable for the builder (repeatable)")
	return cmd
}

// upload streams the context into the build pod's fetch container, through the API server's
// attach endpoint, once that container runs.
func (c *cluster) upload(ctx context.Context, b *kilnv1.Build, dir, file string) error {
	pod := controller.PodName(b)
	if err := c.waitRunning(ctx, pod, "fetch-source"); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	counter := &progressWriter{w: pw, every: 1 << 20, start: time.Now()}
	go func() {
		if dir != "" {
			pw.CloseWithError(archive.WriteDir(counter, dir, false))
			return
		}
		f, err := os.Open(file)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		defer f.Close()
		_, err = io.Copy(counter, f)
		pw.CloseWithError(err)
	}()
	req := c.clientset.CoreV1().RESTClient().Post().Resource("pods").Namespace(c.namespace).Name(pod).SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: "fetch-source", Stdin: true}, clientgoscheme.ParameterCodec)
	exec, err := remotecommand.NewSPDYExecutor(c.config, "POST", req.URL())
	if err != nil {
		return fmt.Errorf("attaching to %s: %w", pod, err)
	}
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr}); err != nil {
		return fmt.Errorf("uploading to %s: %w", pod, err)
	}
	counter.done()
	return nil
}

// waitRunning waits until a container of pod runs.
func (c *cluster) waitRunning(ctx context.Context, pod, container string) error {
	for {
		p, err := c.clientset.CoreV1().Pods(c.namespace).Get(ctx, pod, metav1.GetOptions{})
		if err == nil {
			for _, cs := range p.Status.InitContainerStatuses {
				if cs.Name == container && cs.State.Running != nil {
					return nil
				}
				if cs.Name == container && cs.State.Terminated != nil {
					return fmt.Errorf("the %s container of %s ended before the upload", container, pod)
				}
			}
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// progressWriter reports upload progress on stderr.
type progressWriter struct {
	w       io.Writer
	n, next int64
	every   int64
	start   time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if p.n >= p.next {
		fmt.Fprintf(os.Stderr, "\ruploading: %.1f MiB", float64(p.n)/(1<<20))
		p.next = p.n + p.every
	}
	return n, err
}

func (p *progressWriter) done() {
	fmt.Fprintf(os.Stderr, "\ruploaded %.1f MiB in %s\n", float64(p.n)/(1<<20), time.Since(p.start).Round(time.Millisecond))
}
