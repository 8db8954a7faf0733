# kiln's build and test entry points. `make test` is what CI runs (via .ci/run):
# it sets the machine up (idempotently) and runs the whole suite.

GO ?= go
GOTEST_TIMEOUT ?= 60m
STATICCHECK ?= $(firstword $(wildcard $(HOME)/go/bin/staticcheck) $(shell command -v staticcheck 2>/dev/null))

.PHONY: all build test setup fixtures-debian vet unit lint hello clean

all: build

## build: static kiln binary in bin/kiln
build:
	CGO_ENABLED=0 $(GO) build -o bin/kiln ./cmd/kiln

## setup: packages, test users, fixture images, test registry (needs root)
setup:
	./test/setup.sh

## fixtures-debian: the Debian bookworm fixture (mmdebstrap, cached per ISO week)
fixtures-debian: setup
	./test/fixtures/build.sh debian

## vet: go vet over every package
vet:
	$(GO) vet ./...

## test: set-up, vet, then every test (unit, e2e, pod-like)
test: setup vet
	$(GO) test -timeout $(GOTEST_TIMEOUT) ./...

## lint: gofmt, go vet and staticcheck (when installed)
lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -n "$(STATICCHECK)" ]; then echo "$(STATICCHECK) ./..."; $(STATICCHECK) ./...; \
	else echo "staticcheck not installed: go install honnef.co/go/tools/cmd/staticcheck@latest"; fi

## hello: build kiln and the example image, with no registry involved
hello: build
	CGO_ENABLED=0 $(GO) build -o examples/hello/hello ./examples/hello
	bin/kiln build -t hello examples/hello

clean:
	rm -rf bin examples/hello/hello
