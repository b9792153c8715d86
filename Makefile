# podcopy. `make help` lists the targets.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO ?= go
export PODCOPY_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/podcopy-agent for this machine.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/podcopy-agent ./cmd/agent

.PHONY: build-linux
build-linux: ## Build the static linux/amd64 binary the image copies (bin/linux/amd64).
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux/amd64/podcopy-agent ./cmd/agent

.PHONY: build-linux-arm64
build-linux-arm64: ## Cross-compile the static linux/arm64 binary (bin/linux/arm64).
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linux/arm64/podcopy-agent ./cmd/agent

.PHONY: image-multiarch
image-multiarch: build-linux build-linux-arm64 ## The agent image for linux/amd64 and linux/arm64 as one manifest list (buildah), checked: platforms, ELF machine, the arm64 binary run under qemu.
	bash hack/cluster/images.sh multiarch

PLUGIN_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64

.PHONY: plugin
plugin: ## Build kubectl-podcopy for linux and darwin (amd64, arm64) into dist/, with krew archives and sha256 sums.
	bash hack/plugin.sh $(VERSION) $(PLUGIN_PLATFORMS)

.PHONY: plugin-local
plugin-local: ## Build kubectl-podcopy for this machine into bin/ (put bin/ on PATH: kubectl podcopy ...).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kubectl-podcopy ./cmd/kubectl-podcopy

.PHONY: deps
deps: ## Install the Debian packages tests and the local cluster use (apt).
	bash hack/cluster/build.sh --deps-only

.PHONY: test
test: ## Lint, unit tests, the multi-arch image check, then the end-to-end suite on a local cluster (builds it on first use).
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) image-multiarch
	$(MAKE) e2e

.PHONY: lint
lint: unit-deps chart-lint monitoring ## golangci-lint (.golangci.yml), shellcheck on every .sh (hack/ and the embedded scripts), helm lint, the alert rules and dashboard.
	bash hack/lint.sh

.PHONY: monitoring
monitoring: ## promtool check and unit-test the chart's alert rules (hack/monitoring/rules.test.yaml); check the dashboard's queries parse.
	bash hack/monitoring/check.sh

.PHONY: unit-deps
unit-deps: ## Install only what unit tests and lint use (busybox-static, shellcheck).
	bash hack/cluster/build.sh --unit-deps-only

.PHONY: unit
unit: unit-deps ## Unit tests only (no cluster).
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

.PHONY: web
web: ## Rebuild the web shell's browser assets from npm (package-lock.json) into internal/shell/web/vendor.
	cd web && npm ci --no-audit --no-fund
	cp web/node_modules/@xterm/xterm/lib/xterm.js web/node_modules/@xterm/xterm/css/xterm.css \
	   web/node_modules/@xterm/addon-fit/lib/addon-fit.js internal/shell/web/vendor/

.PHONY: packages
packages: ## Redraw docs/images/packages.svg, the packages' import graph, from go list (installs graphviz with apt when missing).
	command -v dot >/dev/null || (apt-get update -qq && apt-get install -y -qq graphviz)
	bash hack/packages.sh docs/images/packages.svg

.PHONY: fuzz
fuzz: ## Fuzz the tar sanitizer for 60s, then the alert receiver's payload parsers for 60s.
	$(GO) test ./pkg/ship -run '^$$' -fuzz FuzzProcess -fuzztime 60s
	$(GO) test ./internal/alert -run '^$$' -fuzz FuzzParse -fuzztime 60s

.PHONY: cluster-up
cluster-up: ## Build (cached) and start the local cluster (three nodes: two for workloads, one for the signer; NODES=1 for one).
	bash hack/cluster/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and clean up its mounts and processes.
	bash hack/cluster/cluster.sh down

.PHONY: chart-lint
chart-lint: ## helm lint and render the chart with default and local-cluster values.
	bash hack/cluster/helm.sh lint charts/podcopy
	bash hack/cluster/helm.sh lint charts/podcopy -f charts/podcopy/ci/local-values.yaml
	bash hack/cluster/helm.sh template podcopy charts/podcopy -n podcopy > /dev/null
	bash hack/cluster/helm.sh template podcopy charts/podcopy -n podcopy -f charts/podcopy/ci/local-values.yaml > /dev/null
	bash hack/cluster/helm.sh template podcopy charts/podcopy -n podcopy --set metrics.rules.enabled=true,metrics.dashboard.enabled=true,metrics.serviceMonitor.enabled=true > /dev/null
	bash hack/cluster/helm.sh lint charts/podcopy --set signer.enabled=true
	bash hack/cluster/helm.sh template podcopy charts/podcopy -n podcopy --set signer.enabled=true > /dev/null

.PHONY: deploy
deploy: cluster-up ## Build the agent image and install it with the Helm chart (and an analysis pod).
	bash hack/deploy.sh helm

E2E_GO_TEST = $(GO) test -tags e2e -count=1 -timeout 45m -v ./e2e/
E2E_SUMMARY = grep -E '^(=== RUN|\s*--- |PASS|FAIL|ok)|^\s+\S+_test.go:[0-9]+:'

.PHONY: e2e-on
e2e-on: ## The e2e suite against another cluster: make e2e-on KUBECONFIG=admin.kubeconfig [RUN=regexp] (tests that need the local cluster itself skip).
	PODCOPY_E2E_KUBECONFIG=$(KUBECONFIG) $(GO) test -tags e2e -count=1 -timeout 60m -v -run '$(or $(RUN),.)' ./e2e/

.PHONY: e2e
e2e: cluster-up chart-lint ## End-to-end suite on the local cluster: once installed with kustomize, then with Helm.
	@mkdir -p .cache
	bash hack/cosign.sh version >/dev/null  # cosign, cached: TestSigner verifies a record's bundle with it
	bash hack/deploy.sh kustomize
	set -o pipefail; $(E2E_GO_TEST) -run 'TestCollect$$' 2>&1 | tee .cache/e2e-kustomize.log | $(E2E_SUMMARY)
	bash hack/deploy.sh helm
	set -o pipefail; $(E2E_GO_TEST) 2>&1 | tee .cache/e2e.log | $(E2E_SUMMARY)

BENCH_ARGS ?=
.PHONY: bench
bench: deploy ## Benchmarks on the local cluster: podcopy vs kubectl pipe and kubectl cp; memory, CPU, scale (bench/results).
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/ship | tee bench/results/pipeline.txt
	cd bench && $(GO) run . $(BENCH_ARGS)

.PHONY: demo
demo: deploy ## Local cluster, agent, analysis pod and a demo mysql pod; collect its slow log.
	bash hack/demo.sh
