package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/controller"
)

// TestDoctorInBuildPod runs kiln doctor in the build pod as the controller renders it
// (controller.BuildPod with the options the cluster's controller has), with the builder's
// arguments replaced by `doctor`: once with procMount Unmasked (the controller's
// --unmasked-proc, its default), once with Default (a cluster without ProcMountType). The
// output goes to the summary.
func TestDoctorInBuildPod(t *testing.T) {
	e := needCluster(t)
	for _, unmasked := range []bool{false, true} {
		name := map[bool]string{false: "doctor", true: "doctor-unmasked"}[unmasked]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := e.inlineBuild(name, "FROM "+e.base+"\n")
			pod, err := controller.BuildPod(b, e.podOptions(unmasked))
			if err != nil {
				t.Fatalf("rendering the build pod: %v", err)
			}
			for i := range pod.Spec.Containers {
				if pod.Spec.Containers[i].Name == buildContainer {
					pod.Spec.Containers[i].Args = []string{"doctor", "--root", storeMountPath + "/store"}
				}
			}
			phase, log := e.runPod(t, pod, 3*time.Minute)
			summaryf(t, "kiln doctor in a build pod (procMount %s), pod %s:\n%s", map[bool]string{false: "Default", true: "Unmasked"}[unmasked], phase, indent(log))
			for _, want := range []string{"full: running as uid 0: mapping all 65536 ids", "ok   overlay", "kiln will build with the full id mapping (65536 ids) and overlay snapshots"} {
				if !strings.Contains(log, want) {
					t.Errorf("kiln doctor in the build pod does not say %q", want)
				}
			}
			if unmasked && !strings.Contains(log, "ok   proc") {
				t.Errorf("with procMount: Unmasked, kiln doctor should find that a fresh /proc can be mounted")
			}
		})
	}
}

// podOptions are the build pod options of the cluster's controller (config/manager and
// up.sh's overlay), with procMount Unmasked or not.
func (e *clusterEnv) podOptions(unmasked bool) controller.PodOptions {
	return controller.PodOptions{
		BuilderImage:       e.builderImage,
		SeccompProfile:     seccompProfile,
		UnmaskedProc:       unmasked,
		InsecureRegistries: []string{e.podRegistry},
	}
}

// probeLine is a result line of the hostile RUN step.
var probeLine = regexp.MustCompile(`(?m)^PROBE-[A-Z]+ .*$`)

// TestHostileDockerfile is acceptance 7: a Dockerfile whose RUN step looks for what a build
// must not reach, run by the controller in a real build pod with a push secret:
//   - the node's files: the cluster's CA and service-account keys, kubeconfigs, the kubelet's
//     directory, node-only /etc/passwd entries, and canary files the test writes on the node;
//   - the controller's service-account token (and any token: a build pod mounts none);
//   - the push secret (registry credentials with a canary password) and the pod's other
//     mounts (the source workspace, the store, the termination log);
//   - kiln's own processes: it lists /proc, sends kill -0 to every pid it sees, and tries their
//     environ and root.
//
// It finds none of the files or secrets, signals none of kiln's processes and reads none of
// their environments or roots. Run by the controller (procMount: Unmasked, its default), the
// RUN sees none of kiln's processes at all. The other subtest renders the pod with the
// Default procMount, as on a cluster without the ProcMountType feature, and runs it directly:
// the RUN's /proc is then a read-only view of the pod's, and it does see the builder's pids and
// command lines (kiln doctor says so: "FAIL proc"), though it still cannot signal or read them.
func TestHostileDockerfile(t *testing.T) {
	e := needCluster(t)
	canary := "kiln-e2e-canary-" + randomHex(12)
	canaryFiles := []string{filepath.Join(e.dir, "e2e-canary-"+e.run), "/tmp/kiln-e2e-canary-" + e.run}
	for _, f := range canaryFiles {
		if err := os.WriteFile(f, []byte(canary+"\n"), 0o644); err != nil {
			t.Fatalf("writing the canary file %s on the node: %v", f, err)
		}
		t.Cleanup(func() { os.Remove(f) })
	}
	password := "kiln-e2e-password-" + randomHex(12)
	auth := base64.StdEncoding.EncodeToString([]byte("e2e:" + password))
	e.create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "push-creds", Namespace: e.ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		StringData: map[string]string{corev1.DockerConfigJsonKey: fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, e.podRegistry, auth)},
	})
	nodeUsers := false
	if passwd, err := os.ReadFile("/etc/passwd"); err == nil && strings.Contains(string(passwd), "\nkiln-sub:") {
		nodeUsers = true // test/setup.sh's users: in the node's /etc/passwd, not in the image's
	}
	paths := []string{
		e.dir, filepath.Join(e.dir, "pki", "ca.key"), filepath.Join(e.dir, "pki", "sa.key"), filepath.Join(e.dir, "kubeconfig"),
		filepath.Join(e.dir, "kubeconfigs", "kubelet.kubeconfig"), filepath.Join(e.dir, "kubelet"), "/var/cache/kiln-kube",
		"/var/lib/kiln-test", "/etc/kubernetes", "/root/.docker", "/root/.kube",
		"/var/run/secrets/kubernetes.io/serviceaccount/token", "/run/secrets/kubernetes.io",
		"/var/run/kiln/push/.dockerconfigjson", "/var/run/kiln", "/workspace/source/Dockerfile", "/var/lib/kiln/store", "/dev/termination-log",
	}
	paths = append(paths, canaryFiles...)
	dockerfile := probeDockerfile(e.base, paths, []string{canary, password, auth, "eyJhbGciOi", "PRIVATE KEY"}, nodeUsers)

	for _, unmasked := range []bool{false, true} {
		name := map[bool]string{false: "hostile", true: "hostile-unmasked"}[unmasked]
		how := map[bool]string{true: "run by the controller (procMount Unmasked, its default)", false: "procMount Default, pod rendered by controller.BuildPod"}[unmasked]
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := e.inlineBuild(name, dockerfile)
			b.Spec.Output.PushSecret = &corev1.LocalObjectReference{Name: "push-creds"}
			var log string
			if !unmasked {
				pod, err := controller.BuildPod(b, e.podOptions(false))
				if err != nil {
					t.Fatalf("rendering the build pod: %v", err)
				}
				phase, out := e.runPod(t, pod, 5*time.Minute)
				if phase != corev1.PodSucceeded {
					t.Fatalf("the build pod %s ended %s; its log:\n%s", pod.Name, phase, indent(out))
				}
				log = out
			} else {
				e.create(t, b)
				got := e.waitFinal(t, b.Name, 5*time.Minute)
				e.expectPhase(t, got, kilnv1.BuildPhaseComplete, "")
				log = e.savedLog(t, b.Name)
			}
			results := probeLine.FindAllString(log, -1)
			t.Logf("what the hostile RUN found:\n%s", indent(strings.Join(results, "\n")))
			checkProbe(t, results, unmasked, len(paths))
		})
	}
}

// checkProbe reads the hostile RUN's results.
func checkProbe(t *testing.T, results []string, unmasked bool, npaths int) {
	t.Helper()
	var absent, files, control int
	var self []string
	type proc struct {
		pid         int
		nspid       []string
		kill0, cmd  string
		environ, rt string
	}
	var procs []proc
	for _, r := range results {
		kind, rest, _ := strings.Cut(r, " ")
		switch kind {
		case "PROBE-FOUND":
			t.Errorf("the RUN step reached what it must not: %s", rest)
		case "PROBE-ABSENT":
			absent++
		case "PROBE-CONTROL":
			control++
		case "PROBE-FILES":
			files, _ = strconv.Atoi(rest)
		case "PROBE-SELF":
			self = strings.Split(strings.TrimPrefix(rest, "nspid="), ",")
		case "PROBE-PROC":
			var p proc
			fields := strings.SplitN(rest, " cmd=", 2)
			if len(fields) == 2 {
				p.cmd = fields[1]
			}
			for _, kv := range strings.Fields(fields[0]) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "pid":
					p.pid, _ = strconv.Atoi(v)
				case "nspid":
					p.nspid = strings.Split(v, ",")
				case "kill0":
					p.kill0 = v
				case "environ":
					p.environ = v
				case "root":
					p.rt = v
				}
			}
			procs = append(procs, p)
		}
	}
	if absent != npaths {
		t.Errorf("the RUN step reported %d of the %d paths absent (the rest are PROBE-FOUND, or the probe did not run)", absent, npaths)
	}
	if files < 5 || control != 1 {
		t.Errorf("the RUN step searched %d files and reported its control file (which holds every needle) %d times, want once: the search does not work", files, control)
	}
	if len(self) == 0 || len(procs) == 0 {
		t.Fatalf("the RUN step reported no processes (PROBE-SELF %v, %d PROBE-PROC): the probe did not work", self, len(procs))
	}
	// A process is in the RUN's own pid namespace when /proc shows it as deep as the probe's own
	// processes (NSpid lists its pid in each namespace from /proc's down to its own); the pid
	// that kill -0 names is the last of those.
	depth := len(self)
	own := map[string]bool{}
	for _, p := range procs {
		if len(p.nspid) == depth {
			own[p.nspid[depth-1]] = true
		}
	}
	var builders []string
	for _, p := range procs {
		isBuilder := strings.HasPrefix(p.cmd, "/usr/bin/kiln ") || strings.Contains(p.cmd, "kiln build")
		if isBuilder {
			builders = append(builders, fmt.Sprintf("pid %d (NSpid %s): %.60s", p.pid, strings.Join(p.nspid, ","), p.cmd))
			if len(p.nspid) >= depth {
				t.Errorf("kiln's builder process %d (%s) is in the RUN's pid namespace", p.pid, p.cmd)
			}
			if p.environ != "denied" || p.rt != "denied" {
				t.Errorf("the RUN step could read kiln's process %d: environ %s, root %s (%s)", p.pid, p.environ, p.rt, p.cmd)
			}
		}
		// kill -0 N reaches the process of the RUN's pid namespace numbered N, if any: it must be
		// one of the RUN's own (its shell, its commands, its sandbox init), never one of kiln's.
		if p.kill0 == "signalled" && !own[strconv.Itoa(p.pid)] {
			t.Errorf("kill -0 %d from the RUN step succeeded, and no process of its own pid namespace has that number (it shows %s: %s)", p.pid, strings.Join(p.nspid, ","), p.cmd)
		}
	}
	switch {
	case unmasked && len(builders) > 0:
		t.Errorf("with procMount: Unmasked the RUN step still sees kiln's builder processes:\n%s", indent(strings.Join(builders, "\n")))
	case unmasked:
		summaryf(t, "hostile RUN, procMount Unmasked: nothing found; /proc shows %d processes, all its own (sandbox init and shell); kiln's builder is invisible", len(procs))
	default:
		summaryf(t, "hostile RUN, procMount Default (a cluster without ProcMountType): nothing found in %d files or %d paths; sees %d of kiln's builder processes in /proc (pids and command lines: the masked-/proc fallback, kiln doctor's FAIL proc) but cannot signal them or read their environ or root", files, npaths, len(builders))
	}
}

// probeDockerfile is the hostile Dockerfile: one RUN that reports, in lines starting with
// PROBE-, each path it can see, each file (and its own environment) holding one of needles (but
// a control file it writes, which holds them all and must be found: PROBE-CONTROL),
// and each process in /proc with whether kill -0, its environ and its root worked. The needles
// are split in the script, so that the script itself holds none of them. The Dockerfile reaches
// the pod through a container's environment, where Kubernetes turns "$$" into "$": the script
// has no "$$".
func probeDockerfile(base string, paths, needles []string, nodeUsers bool) string {
	var s strings.Builder
	fmt.Fprintf(&s, "FROM %s\nRUN <<'PROBE'\nset +e\n", base)
	var pats, vars []string
	for i, n := range needles {
		h := len(n) / 2
		fmt.Fprintf(&s, "n%d='%s''%s'\n", i, n[:h], n[h:])
		pats = append(pats, fmt.Sprintf(`-e "$n%d"`, i))
		vars = append(vars, fmt.Sprintf(`"$n%d"`, i))
	}
	fmt.Fprintf(&s, "for f in %s; do\n", strings.Join(paths, " "))
	s.WriteString("  if [ -e \"$f\" ]; then echo \"PROBE-FOUND path $f\"; else echo \"PROBE-ABSENT $f\"; fi\ndone\n")
	if nodeUsers {
		s.WriteString("grep -q '^kiln-sub:' /etc/passwd /etc/shadow 2>/dev/null && echo 'PROBE-FOUND the node users in /etc/passwd or /etc/shadow'\n")
	}
	// A control file holds every needle: the search must report it, and nothing else.
	fmt.Fprintf(&s, "printf '%%s\\n' %s >/tmp/probe-control\n", strings.Join(vars, " "))
	s.WriteString("find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f -print 2>/dev/null >/tmp/probe-files\n")
	fmt.Fprintf(&s, "xargs grep -l -F %s </tmp/probe-files 2>/dev/null | while read -r h; do\n", strings.Join(pats, " "))
	s.WriteString("  if [ \"$h\" = /tmp/probe-control ]; then echo \"PROBE-CONTROL $h\"; else echo \"PROBE-FOUND content in $h\"; fi\ndone\n")
	fmt.Fprintf(&s, "env | grep -q -F %s && echo 'PROBE-FOUND content in the environment'\n", strings.Join(pats, " "))
	s.WriteString("echo \"PROBE-FILES `wc -l </tmp/probe-files`\"\nrm -f /tmp/probe-files /tmp/probe-control\n")
	s.WriteString("echo \"PROBE-SELF nspid=`grep NSpid: /proc/self/status | cut -f2- | tr '\\t' ','`\"\n")
	s.WriteString(`for p in /proc/[0-9]*; do
  n=${p#/proc/}
  ns=` + "`grep NSpid: $p/status 2>/dev/null | cut -f2- | tr '\\t' ','`" + `
  cmd=` + "`tr '\\0' ' ' <$p/cmdline 2>/dev/null | cut -c1-160`" + `
  if kill -0 "$n" 2>/dev/null; then k=signalled; else k=refused; fi
  if cat $p/environ >/dev/null 2>&1; then en=readable; else en=denied; fi
  if ls $p/root/ >/dev/null 2>&1; then rt=readable; else rt=denied; fi
  [ -n "$ns" ] && echo "PROBE-PROC pid=$n nspid=$ns kill0=$k environ=$en root=$rt cmd=$cmd"
done
true
PROBE
`)
	return s.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
