# kiln's build and test entry points. `make test` is what CI runs (via .ci/run):
# it sets the machine up (idempotently) and runs the whole suite.

GO ?= go
GOTEST_TIMEOUT ?= 60m
STATICCHECK ?= $(firstword $(wildcard $(HOME)/go/bin/staticcheck) $(shell command -v staticcheck 2>/dev/null))

.PHONY: seccomp images all build test setup fixtures-debian vet unit lint hello clean kube-assets generate bench \
	cluster-up cluster-down test-cluster test-all

all: build

## build: static binaries in bin/: kiln, kiln-kube (its Kubernetes verbs) and kiln-controller
build:
	CGO_ENABLED=0 $(GO) build -o bin/kiln ./cmd/kiln
	CGO_ENABLED=0 $(GO) build -o bin/kiln-kube ./cmd/kiln-kube
	CGO_ENABLED=0 $(GO) build -o bin/kiln-controller ./cmd/kiln-controller

## setup: packages, test users, fixture images, test registry (needs root)
setup:
	./test/setup.sh

## fixtures-debian: the Debian bookworm fixture (mmdebstrap, cached per ISO week)
fixtures-debian: setup
	./test/fixtures/build.sh debian

## vet: go vet over every package
vet:
	$(GO) vet ./...

## kube-assets: kube-apiserver (built from Go modules, cached) and etcd for envtest
kube-assets:
	./hack/kube/build.sh >/dev/null

## test: set-up, vet, then every test (unit, controller on a real API server, e2e, pod-like)
test: setup vet kube-assets
	KUBEBUILDER_ASSETS=$$(./hack/kube/build.sh) $(GO) test -timeout $(GOTEST_TIMEOUT) ./...

## generate: deepcopy code and CRDs from the API types (controller-gen, pinned)
generate:
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object paths=./api/...
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 crd rbac:roleName=kiln-controller \
		paths=./api/... paths=./internal/controller/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

## lint: gofmt, go vet and staticcheck (when installed)
lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -n "$(STATICCHECK)" ]; then echo "$(STATICCHECK) ./..."; $(STATICCHECK) ./...; \
	else echo "staticcheck not installed: go install honnef.co/go/tools/cmd/staticcheck@latest"; fi

## images: the builder and controller images, built by kiln from scratch (IMAGE_REPO, VERSION;
## PUSH=1 pushes them)
IMAGE_REPO ?= localhost:5000/kiln
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
images: build
	@for img in builder controller; do \
		ctx=bin/images/$$img; rm -rf $$ctx; mkdir -p $$ctx; \
		cp images/$$img/Dockerfile images/passwd images/group /etc/ssl/certs/ca-certificates.crt $$ctx/; \
		cp bin/kiln bin/kiln-controller $$ctx/; \
		name=$(IMAGE_REPO)/$$img:$(VERSION); [ $$img = builder ] && name=$(IMAGE_REPO)/kiln:$(VERSION); \
		echo "building $$name"; \
		bin/kiln build -q --source-date-epoch 0 -t $$name $(if $(PUSH),--push) $$ctx || exit 1; \
	done

## cluster-up: a real single-node Kubernetes on this machine (test/cluster; needs root): builds
## kube-*, kubectl, containerd and runc from Go modules (cached), starts them with all state in
## ${KILN_CLUSTER_DIR:-/var/lib/kiln-cluster}, deploys kiln's controller with config/, and prints
## the KUBECONFIG to use
cluster-up:
	./test/cluster/up.sh

## cluster-down: stop that cluster and remove everything it made
cluster-down:
	./test/cluster/down.sh

## test-all: the whole suite, what CI runs: make test, then (if it passed) make test-cluster
test-all: test
	$(MAKE) test-cluster

## test-cluster: the end-to-end suite on a real cluster (test/cluster/e2e; needs root): brings the
## cluster up, runs the suite, and always brings the cluster down (test/cluster/test.sh). CI runs
## it after make test
test-cluster: build
	GO=$(GO) ./test/cluster/test.sh

## seccomp: regenerate config/seccomp/kiln-seccomp.json (containerd's default + kiln's calls)
seccomp:
	cd hack/seccomp && $(GO) run . > ../../config/seccomp/kiln-seccomp.json

## hello: build kiln and the example image, with no registry involved
hello: build
	CGO_ENABLED=0 $(GO) build -o examples/hello/hello ./examples/hello
	bin/kiln build -t hello examples/hello

## bench: compare kiln with buildah on real workloads (needs root; not run by CI; see bench/main.go),
## e.g. make bench BENCHFLAGS='-workloads files-10k,chrony -runs 1'
bench: build
	$(GO) run ./bench $(BENCHFLAGS)

clean:
	rm -rf bin examples/hello/hello
