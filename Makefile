# teledock's build, test cluster, tests, demo and benchmarks. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

# Computed once: a recursive variable would run git describe again in every recipe, and a tree that
# changes during a build would tag the images with one version and load another.
ifndef VERSION
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null | sed 's/^\([0-9a-f]\)/v0.0.0-\1/' || echo v0.0.0-dev)
endif
GO_LDFLAGS := -s -w -X teledock.dev/teledock/internal/version.Version=$(VERSION)
export CGO_ENABLED := 0
# grpcnotrace keeps golang.org/x/net/trace (and html/template with it) out of every binary: ~3 MB
# of the traffic-agent, whose resident pages count in every intercepted pod.
export GOFLAGS := -buildvcs=false -tags=grpcnotrace

include scripts/versions.env
TELEDOCK_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/teledock
K8S_BIN := $(TELEDOCK_CACHE)/tools/kubernetes-$(KUBERNETES_VERSION)
PROTOC_BIN := $(TELEDOCK_CACHE)/tools/protoc-gen-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)
KUBECTL := $(K8S_BIN)/kubectl
HELM := $(TELEDOCK_CACHE)/tools/helm-$(HELM_VERSION)/helm
KUBECONFIG_FILE := $(CURDIR)/.cluster/kubeconfig
CHROMIUM ?= /usr/bin/chromium

# Static binaries that go into images (name=package).
IMAGE_BINARIES := teledock-daemon=./cmd/teledock-daemon traffic-manager=./cmd/traffic-manager \
  traffic-agent=./agent/cmd/traffic-agent \
  echo=./e2e/images/echo probe=./e2e/images/probe
# Images loaded into the test cluster.
IMAGES := teledock/daemon:$(VERSION) teledock/traffic-manager:$(VERSION) teledock/traffic-agent:$(VERSION) \
  teledock/echo:$(VERSION)

.PHONY: help
help: ## show the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install Debian packages and Go-built tools (cached)
	scripts/install-deps.sh all

# The images' binaries bin/teledock carries (gzip'd, embedded with the teledockimages tag), so that
# it can load its own images into Docker and local clusters' nodes (internal/images).
SHIPPED_BINARIES := teledock-daemon traffic-manager traffic-agent
PAYLOAD := internal/images/payload/linux_$(shell go env GOARCH)

.PHONY: build
build: ## build the static binaries for images, then bin/teledock carrying the shipped ones
	@mkdir -p build/bin
	@for b in $(IMAGE_BINARIES); do \
	  echo "go build $${b#*=} -> build/bin/$${b%%=*}"; \
	  GOOS=linux go build -trimpath -ldflags "$(GO_LDFLAGS)" -o build/bin/$${b%%=*} $${b#*=} || exit 1; \
	done
	@rm -rf internal/images/payload && mkdir -p $(PAYLOAD)
	@for b in $(SHIPPED_BINARIES); do \
	  echo "gzip build/bin/$$b -> $(PAYLOAD)/$$b.gz"; gzip -9 -n -c build/bin/$$b > $(PAYLOAD)/$$b.gz; \
	done
	go build -trimpath -tags grpcnotrace,teledockimages -ldflags "$(GO_LDFLAGS)" -o bin/teledock ./cmd/teledock

.PHONY: generate
generate: ## regenerate the gRPC code from api/*.proto
	cd api && PATH=$(PROTOC_BIN):$$PATH protoc -I . --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative $$(find . -name '*.proto')

.PHONY: images
images: build ## build the images with docker buildx bake
	scripts/docker-up.sh
	VERSION=$(VERSION) docker buildx bake --progress plain -f docker-bake.hcl

.PHONY: push
push: images ## push this build's images to REGISTRY (make push REGISTRY=ghcr.io/me)
	@[ -n "$(REGISTRY)" ] || { echo "make push needs REGISTRY=HOST[/PATH]" >&2; exit 2; }
	@for img in teledock/daemon teledock/traffic-manager teledock/traffic-agent; do \
	  echo "docker push $(REGISTRY)/$$img:$(VERSION)"; \
	  docker tag $$img:$(VERSION) $(REGISTRY)/$$img:$(VERSION) && docker push -q $(REGISTRY)/$$img:$(VERSION) || exit 1; \
	done

.PHONY: cluster-up
cluster-up: deps images ## start the local test cluster and load the images into it
	scripts/cluster/up.sh $(IMAGES)

.PHONY: cluster-down
cluster-down: ## stop the local test cluster and remove everything it left
	scripts/cluster/down.sh

.PHONY: cluster-status
cluster-status: ## say what of the local test cluster runs
	scripts/cluster/status.sh

.PHONY: test-unit
test-unit: ## unit tests
	go test -count=1 ./...

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## every fuzz target for FUZZTIME each (`make test` runs their seed corpora)
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | sed 's/^func //'); do \
	    echo "== $$f ($$dir, $(FUZZTIME))"; go test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$dir; \
	  done; \
	done

.PHONY: ui
ui: ## the Desktop extension's UI: npm ci (when the lockfile changed), unit tests, build
	cd desktop/ui && if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm ci --no-audit --no-fund --loglevel=error; fi
	cd desktop/ui && npm test --silent && node build.mjs

# The CLI for the extension's host binaries: each OS, for these architectures (a release sets both).
EXT_ARCHES ?= $(shell go env GOARCH)

.PHONY: extension
extension: ui ## the Docker Desktop extension image teledock/desktop-extension:VERSION
	@for arch in $(EXT_ARCHES); do for os in darwin linux windows; do \
	  case $$os in windows) ext=.exe;; *) ext=;; esac; out=build/desktop-bin/$$arch/$$os/teledock$$ext; \
	  echo "go build ./cmd/teledock -> $$out"; \
	  GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "$(GO_LDFLAGS)" -o $$out ./cmd/teledock || exit 1; \
	done; done
	rm -rf build/desktop-context && mkdir -p build/desktop-context
	cp -r desktop/metadata.json desktop/teledock.svg desktop/ui/build/ui build/desktop-bin build/desktop-context/
	scripts/docker-up.sh
	VERSION=$(VERSION) docker buildx bake --progress plain -f docker-bake.hcl desktop-extension

.PHONY: test-e2e
test-e2e: cluster-up extension ## end-to-end tests against the local cluster and Docker (and the UI in Chromium)
	TELEDOCK_E2E_KUBECONFIG=$(KUBECONFIG_FILE) TELEDOCK_E2E_KUBECTL=$(KUBECTL) \
	TELEDOCK_E2E_BINARY=$(CURDIR)/bin/teledock TELEDOCK_E2E_VERSION=$(VERSION) TELEDOCK_E2E_HELM=$(HELM) \
	TELEDOCK_E2E_CHROMIUM=$(CHROMIUM) \
	  go test -tags e2e -count=1 -timeout 30m -v ./e2e/...

.PHONY: test
test: deps test-unit test-e2e ## unit and end-to-end tests (starts the cluster when needed)

.PHONY: demo
demo: cluster-up ## the main job on the built-in cluster
	KUBECTL=$(KUBECTL) KUBECONFIG=$(KUBECONFIG_FILE) TELEDOCK=$(CURDIR)/bin/teledock VERSION=$(VERSION) scripts/demo.sh

.PHONY: bench
bench: cluster-up ## benchmarks as ratios to kubectl port-forward and direct access (BENCH=Paths: one; PROFILE=1: CPU profiles in build/profiles)
	TELEDOCK_E2E_KUBECONFIG=$(KUBECONFIG_FILE) TELEDOCK_E2E_KUBECTL=$(KUBECTL) \
	TELEDOCK_E2E_BINARY=$(CURDIR)/bin/teledock TELEDOCK_E2E_VERSION=$(VERSION) \
	  $(if $(PROFILE),TELEDOCK_PPROF=127.0.0.1:6060 TELEDOCK_BENCH_PROFILE=$(CURDIR)/build/profiles) \
	  TELEDOCK_BENCH=1 go test -tags e2e -count=1 -timeout 30m -run "^TestBench$(BENCH)" -v ./e2e/...

.PHONY: clean
clean: ## remove build outputs (not the tool cache)
	rm -rf bin build internal/images/payload
