package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// registryAddr is the plain-HTTP test registry test/setup.sh starts.
const registryAddr = "localhost:5000"

// suiteEnv is what TestMain learns once about the machine. It is written only
// by TestMain, before any test runs, and read-only afterwards.
type suiteEnv struct {
	workDir     string // world-readable scratch root shared by all users
	kiln        string // path of the kiln binary, "" when it could not be built
	kilnErr     string // why kiln is missing
	registryErr string // why the registry is unusable, "" when it answers
}

var suite suiteEnv

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	dir, err := os.MkdirTemp("/var/tmp", "kiln-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: creating work dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Every test user must reach its own directories below this one.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: chmod work dir:", err)
		return 1
	}
	suite.workDir = dir
	suite.kiln, suite.kilnErr = buildKiln(dir)
	suite.registryErr = checkRegistry(registryAddr)
	return m.Run()
}

// buildKiln compiles ./cmd/kiln into dir/bin/kiln (mode 0755, so every test
// user can run it) and returns its path, or "" and the reason it failed.
func buildKiln(dir string) (path, reason string) {
	root, err := repoRoot()
	if err != nil {
		return "", err.Error()
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "kiln")); err != nil {
		return "", "cmd/kiln does not exist yet"
	}
	bin := filepath.Join(dir, "bin", "kiln")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kiln")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("go build ./cmd/kiln: %v\n%s", err, out)
	}
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		return "", err.Error()
	}
	return bin, ""
}

// repoRoot finds the module root from the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no go.mod above %s", dir)
}

func checkRegistry(addr string) string {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/v2/")
	if err != nil {
		return fmt.Sprintf("test registry %s does not answer: %v", addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("test registry %s answers GET /v2/ with %s (want 200, no auth)", addr, resp.Status)
	}
	return ""
}

// needKiln skips t when the kiln binary could not be built.
func needKiln(t *testing.T) string {
	t.Helper()
	if suite.kiln == "" {
		t.Skipf("kiln binary unavailable (%s); remedy: make `go build ./cmd/kiln` succeed", suite.kilnErr)
	}
	return suite.kiln
}

// needRegistry skips t when the test registry is not up.
func needRegistry(t *testing.T) {
	t.Helper()
	if suite.registryErr != "" {
		t.Skipf("%s; remedy: run `sudo test/setup.sh` (or `make test`)", suite.registryErr)
	}
}

// needRoot skips t unless the test process is root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (to switch users and run runc); remedy: run the suite as root, as `make test` in CI does")
	}
}

// needTool skips t when an oracle tool is not installed.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed; remedy: sudo test/setup.sh", name)
	}
	return p
}
