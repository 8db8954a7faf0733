package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// kubeVerbs are the commands served by kiln-kube, the Kubernetes client.
var kubeVerbs = map[string]bool{"start-build": true, "logs": true, "cancel-build": true, "get": true}

// maybeRunKube hands the Kubernetes verbs to kiln-kube, found next to this binary or on PATH,
// replacing this process. It returns only when args are not such a verb.
func maybeRunKube(args []string) error {
	if len(args) < 2 || !kubeVerbs[args[1]] {
		return nil
	}
	path := ""
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), "kiln-kube"); isExecutable(p) {
			path = p
		}
	}
	if path == "" {
		p, err := exec.LookPath("kiln-kube")
		if err != nil {
			return fmt.Errorf("kiln %s needs kiln-kube, the Kubernetes client, next to kiln or on PATH (make build builds it)", args[1])
		}
		path = p
	}
	err := syscall.Exec(path, append([]string{"kiln"}, args[1:]...), os.Environ())
	return fmt.Errorf("running %s: %w", path, err)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 && !errors.Is(err, os.ErrNotExist)
}
