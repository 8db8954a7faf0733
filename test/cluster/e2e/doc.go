// Package e2e is kiln's end-to-end suite on a real single-node Kubernetes cluster, the one
// test/cluster brings up (make cluster-up): BuildConfigs and Builds run by the kiln-controller
// deployed from config/, build pods in hostUsers: false pods on a real kubelet, images pushed to
// the cluster's registry and run as pods, the client verbs of bin/kiln, the webhooks, the
// failure paths, and a hostile Dockerfile that looks for what it must not reach.
//
// `sudo make test-cluster` brings a cluster up, runs the suite and brings the cluster down.
// Against a cluster that is already up (make cluster-up), run `go test -v ./test/cluster/e2e` as
// root. With no cluster the tests skip, so `go test ./...` stays fast; KILN_CLUSTER_E2E=1 (which
// make test-cluster sets) turns that skip into a failure. See test/cluster/README.md.
package e2e
