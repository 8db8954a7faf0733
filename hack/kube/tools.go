//go:build tools

// Package tools records the main packages that build.sh builds, so that
// `go mod tidy` keeps every module they need in go.mod and go.sum.
package tools

import (
	// etcd's own main package, built only when KILN_KUBE_ETCD=build; its
	// version is the one k8s.io/kubernetes requires (see go.mod).
	_ "go.etcd.io/etcd/server/v3"

	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"

	// The node's container runtime, for the single-node test cluster
	// (test/cluster): containerd 2.x with its runc shim, and runc, which
	// build.sh builds with cgo and -tags seccomp.
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/opencontainers/runc"
)
