# banger build, test and lint entry points. `make help` lists them.
SHELL := /bin/bash
GO ?= go
BIN ?= bin
VERSION ?= $(shell sh scripts/version.sh)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILT_AT ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG := github.com/banger-dev/banger/internal/buildinfo
LDFLAGS := -s -w -X $(PKG).version=$(VERSION) -X $(PKG).commit=$(COMMIT) -X $(PKG).builtAt=$(BUILT_AT)
GOLANGCI_LINT_VERSION ?= v2.6.2
# deadcode from x/tools: v0.53.0 builds with go1.26 (the module itself
# needs x/tools v0.52.0 only indirectly).
DEADCODE_VERSION ?= v0.53.0

.PHONY: help build build-test test test-short lint smoke bench demo clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/banger, bin/bangerd, bin/banger-vsock-agent with version stamps
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger-vsock-agent ./cmd/banger-vsock-agent

build-test: build ## also build the fake Firecracker used by tests and demos
	$(GO) build -o $(BIN)/fake-firecracker ./test/fakefirecracker

test: ## run every test tier this machine supports (skips say why)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

test-short: ## unit tests only
	$(GO) test -short -count=1 ./...

lint: ## gofmt, go vet, golangci-lint and deadcode (tools installed on first use)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v golangci-lint >/dev/null || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" golangci-lint run ./...
	@PATH="$$PATH:$$($(GO) env GOPATH)/bin"; command -v deadcode >/dev/null || $(GO) install golang.org/x/tools/cmd/deadcode@$(DEADCODE_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" bash scripts/deadcode.sh

demo: ## as root on Debian: install deps, build and install banger, boot a VM and exec in it (scripts/demo.sh)
	bash scripts/demo.sh

smoke: ## real-boot suite + boot benchmark on Firecracker if usable, else QEMU, then system mode under systemd (root; scripts/smoke.sh)
	bash scripts/smoke.sh

bench: ## control-plane benchmarks (see docs/performance.md)
	$(GO) test -run '^$$' -bench . -benchtime 100x ./internal/daemon/ ./internal/disk/

clean: ## remove build output
	rm -rf $(BIN)
