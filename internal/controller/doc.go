// Package controller is kiln's Kubernetes controller: it turns BuildConfigs into numbered
// Builds (triggers, run policies, history limits) and runs each Build as one unprivileged pod,
// copying the pod's outcome into the Build's status. It renders the build pod but never
// imports the builder's internals: the pod runs the kiln image, which reports back through
// its termination message (api/v1alpha1.BuildResult).
package controller
