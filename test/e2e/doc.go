// Package e2e holds kiln's end-to-end suites: they build the real kiln binary,
// run it as root and as unprivileged users against a real registry, and check
// what it produces with independent tools (buildah, skopeo, umoci, runc).
//
// Everything lives in _test.go files; this file only documents the package.
// `make test` prepares the machine (users, fixtures, the registry on
// localhost:5000); see test/README.md.
//
// The differential harness builds each case with kiln and with buildah and
// compares the two images: config fields and the flattened file trees
// (type, mode, owner, link target, content), never timestamps.
package e2e
