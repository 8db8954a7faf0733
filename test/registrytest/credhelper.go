package registrytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// CredHelperFileEnv names the environment variable that tells the test
// credential helper (test/credhelper) which JSON file holds its credentials.
// The helper creates the file on its first store.
const CredHelperFileEnv = "KILN_TEST_CREDHELPER_FILE"

// credHelperPackage is the test credential helper's import path.
const credHelperPackage = "github.com/kiln-build/kiln/test/credhelper"

// BuildCredHelper builds the test credential helper into dir as
// docker-credential-NAME (a static binary) and returns its path. Put dir on
// PATH and name the helper in a docker config.json ("credsStore": NAME, or
// "credHelpers": {HOST: NAME}) to have clients use it; set
// CredHelperFileEnv to choose where it keeps credentials. It runs the go
// command from the test's working directory, which must be inside this
// module (as every package's tests are).
func BuildCredHelper(t testing.TB, dir, name string) string {
	t.Helper()
	if name == "" || strings.ContainsRune(name, os.PathSeparator) {
		t.Fatalf("registrytest: BuildCredHelper: bad helper name %q", name)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("registrytest: building the credential helper needs the go command (%v); remedy: put go on PATH", err)
	}
	out := filepath.Join(dir, "docker-credential-"+name)
	cmd := exec.Command(goBin, "build", "-o", out, credHelperPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("registrytest: building %s into %s: %v\n%s", credHelperPackage, out, err, b)
	}
	return out
}
