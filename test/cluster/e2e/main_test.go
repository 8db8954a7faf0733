package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// clusterEnv is the cluster under test, as test/cluster/up.sh describes it in $KILN_CLUSTER_DIR/env.
type clusterEnv struct {
	dir          string // KILN_CLUSTER_DIR
	kubeconfig   string
	registry     string // the test registry as the host (and the node's containerd) reach it
	podRegistry  string // the same registry as pods reach it (plain HTTP)
	nodeIP       string // the node's address, which pods reach: the git server listens there
	builderImage string // the kiln image build pods run
	base         string // the base image of the test Dockerfiles, as pods name it

	cfg *rest.Config
	c   client.Client
	cs  kubernetes.Interface

	repo string // the repository's root
	kiln string // bin/kiln (it execs bin/kiln-kube for the client verbs)
	run  string // this run's id: names the namespace and the image repositories
	ns   string // the namespace every test works in
}

var (
	suite *clusterEnv
	// noCluster says why there is no cluster to test (the tests skip); setupErr says why
	// setting up on a cluster that is there failed (the tests fail).
	noCluster, setupErr string
	setupOnce           sync.Once

	report struct {
		sync.Mutex
		start   time.Time
		tests   []testTime
		summary []string // lines for the summary that TestMain prints
	}
)

type testTime struct {
	name   string
	took   time.Duration
	status string
}

// summaryf adds a line to the suite's summary (and logs it to t).
func summaryf(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	report.Lock()
	report.summary = append(report.summary, line)
	report.Unlock()
}

func TestMain(m *testing.M) {
	report.start = time.Now()
	code := m.Run()
	if suite != nil {
		cleanupRun(code)
		printSummary(code)
	}
	os.Exit(code)
}

// needCluster returns the cluster, skipping the test when there is none (failing instead under
// KILN_CLUSTER_E2E=1), and records the test's time for the summary.
func needCluster(t *testing.T) *clusterEnv {
	t.Helper()
	setupOnce.Do(setup)
	if noCluster != "" {
		msg := "no kiln test cluster to run on: " + noCluster +
			"; `sudo make test-cluster` brings one up, runs this suite and brings it down " +
			"(or `sudo make cluster-up`, then `go test -v ./test/cluster/e2e` as root)"
		if os.Getenv("KILN_CLUSTER_E2E") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if setupErr != "" {
		t.Fatalf("setting the suite up on the cluster in %s: %s", suite.dir, setupErr)
	}
	start := time.Now()
	t.Cleanup(func() {
		status := "PASS"
		if t.Failed() {
			status = "FAIL"
		} else if t.Skipped() {
			status = "SKIP"
		}
		report.Lock()
		report.tests = append(report.tests, testTime{t.Name(), time.Since(start), status})
		report.Unlock()
	})
	return suite
}

// setup finds the cluster and makes this run's namespace.
func setup() {
	ctrllog.SetLogger(logr.Discard())
	dir := os.Getenv("KILN_CLUSTER_DIR")
	if dir == "" {
		dir = "/var/lib/kiln-cluster"
	}
	vars, err := readEnvFile(filepath.Join(dir, "env"))
	if err != nil {
		noCluster = err.Error()
		return
	}
	e := &clusterEnv{
		dir:          dir,
		kubeconfig:   vars["KUBECONFIG"],
		registry:     vars["KILN_CLUSTER_REGISTRY"],
		podRegistry:  vars["KILN_CLUSTER_POD_REGISTRY"],
		builderImage: vars["KILN_CLUSTER_BUILDER_IMAGE"],
	}
	for k, v := range map[string]string{"KUBECONFIG": e.kubeconfig, "KILN_CLUSTER_REGISTRY": e.registry,
		"KILN_CLUSTER_POD_REGISTRY": e.podRegistry, "KILN_CLUSTER_BUILDER_IMAGE": e.builderImage} {
		if v == "" {
			noCluster = fmt.Sprintf("%s/env does not set %s (written by an older up.sh?)", dir, k)
			return
		}
	}
	host, _, err := net.SplitHostPort(e.podRegistry)
	if err != nil {
		noCluster = fmt.Sprintf("KILN_CLUSTER_POD_REGISTRY %q is not host:port", e.podRegistry)
		return
	}
	e.nodeIP = host
	e.base = e.podRegistry + "/busybox:latest"
	if _, err := os.ReadFile(e.kubeconfig); err != nil {
		noCluster = fmt.Sprintf("reading the admin kubeconfig: %v (the suite runs as root)", err)
		return
	}
	e.cfg, err = clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		noCluster = fmt.Sprintf("loading %s: %v", e.kubeconfig, err)
		return
	}
	e.cfg.QPS, e.cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(e.cfg)
	if err != nil {
		noCluster = fmt.Sprintf("making a clientset from %s: %v", e.kubeconfig, err)
		return
	}
	e.cs = cs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		noCluster = fmt.Sprintf("%s/env exists but the API server does not answer /readyz: %v", dir, err)
		return
	}

	// From here on a cluster is there: what fails is a failure, not a reason to skip.
	suite = e
	fail := func(format string, args ...any) { setupErr = fmt.Sprintf(format, args...) }
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		fail("%v", err)
		return
	}
	if err := kilnv1.AddToScheme(scheme); err != nil {
		fail("%v", err)
		return
	}
	if e.c, err = client.New(e.cfg, client.Options{Scheme: scheme}); err != nil {
		fail("making a client: %v", err)
		return
	}
	if e.repo, err = repoRoot(); err != nil {
		fail("%v", err)
		return
	}
	e.kiln = filepath.Join(e.repo, "bin", "kiln")
	for _, b := range []string{e.kiln, e.kiln + "-kube"} {
		if _, err := os.Stat(b); err != nil {
			fail("%v: run make build (make test-cluster does)", err)
			return
		}
	}
	for _, tool := range []string{"git", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail("%s is missing: %v (test/setup.sh installs it)", tool, err)
			return
		}
	}

	// The controller must be there, as up.sh deployed it.
	dep, err := cs.AppsV1().Deployments("kiln-system").Get(ctx, "kiln-controller", metav1.GetOptions{})
	if err != nil {
		fail("reading the kiln-controller Deployment: %v", err)
		return
	}
	if dep.Status.AvailableReplicas < 1 {
		fail("the kiln-controller Deployment has no available replica")
		return
	}

	e.run = fmt.Sprintf("%x", time.Now().Unix())
	e.ns = "kiln-e2e-" + e.run
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns, Labels: map[string]string{"kiln.dev/e2e": "true"}}}
	if err := e.c.Create(ctx, ns); err != nil {
		fail("creating namespace %s: %v", e.ns, err)
		return
	}
	// Pods cannot be created before the namespace's default ServiceAccount exists.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := cs.CoreV1().ServiceAccounts(e.ns).Get(context.Background(), "default", metav1.GetOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			fail("waiting for the default ServiceAccount of %s: %v", e.ns, err)
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	fmt.Printf("e2e: cluster %s (%s), namespace %s, builder image %s\n", e.dir, e.cfg.Host, e.ns, e.builderImage)
}

// cleanupRun deletes the run's namespace when every test passed (KILN_E2E_KEEP=1 keeps it).
func cleanupRun(code int) {
	if suite.ns == "" || setupErr != "" {
		return
	}
	if code != 0 || os.Getenv("KILN_E2E_KEEP") == "1" {
		fmt.Printf("e2e: kept namespace %s for a look (KUBECONFIG=%s)\n", suite.ns, suite.kubeconfig)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := suite.c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: suite.ns}})
	if err != nil && !apierrors.IsNotFound(err) {
		fmt.Printf("e2e: deleting namespace %s: %v\n", suite.ns, err)
	}
}

// printSummary prints each test's time, in the order they ran, and the lines tests added with
// summaryf.
func printSummary(code int) {
	report.Lock()
	defer report.Unlock()
	fmt.Printf("\n=== kiln e2e on a real cluster: summary (exit %d, %s in all)\n", code, time.Since(report.start).Round(100*time.Millisecond))
	for _, tt := range report.tests {
		fmt.Printf("    %-4s %-32s %8s\n", tt.status, tt.name, tt.took.Round(100*time.Millisecond))
	}
	for _, l := range report.summary {
		fmt.Printf("    %s\n", l)
	}
}

// readEnvFile reads the `export K=V` lines of up.sh's env file.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s does not exist (no cluster is up)", path)
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = strings.Trim(v, `"'`)
		}
	}
	return vars, sc.Err()
}

// repoRoot is the directory of go.mod above this package.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}
