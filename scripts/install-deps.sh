#!/usr/bin/env bash
# Installs what teledock's build, tests and test cluster need on a fresh Debian machine with Go:
# Debian packages (Docker engine, containerd, runc, CNI plugins, iptables, protoc, Node.js, Chromium)
# and Go-built tools
# (Kubernetes, etcd, CoreDNS, buildx, helm, the distribution registry, protoc plugins). Idempotent; built tools are cached under
# $TELEDOCK_CACHE, keyed by version, so a second run and a fresh clone on the same machine reuse them.
#
#   scripts/install-deps.sh [apt|tools|all]   (default all; apt needs root)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

apt_packages=(docker.io containerd runc containernetworking-plugins iptables iproute2 conntrack
  socat openssl protobuf-compiler ca-certificates dnsutils curl
  nodejs chromium)  # the Desktop extension's UI: its build, and its tests in a real browser

install_apt() {
  local missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node.js from elsewhere (NodeSource) brings its own npm; Debian's nodejs needs the npm package.
  command -v npm >/dev/null || missing+=(npm)
  [ ${#missing[@]} -eq 0 ] && { log "debian packages present"; return; }
  [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root: run 'sudo $0 apt'"
  log "installing debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

have() { [ -x "$1" ]; }

build_k8s() {
  if have "$K8S_BIN/kube-apiserver" && have "$K8S_BIN/etcd" && have "$K8S_BIN/kubectl"; then return; fi
  log "building Kubernetes $KUBERNETES_VERSION and etcd $ETCD_VERSION from Go modules (about 8 minutes cold)"
  local v=$KUBERNETES_VERSION minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  mkdir -p "$K8S_BIN.tmp"
  (cd "$TELEDOCK_ROOT/scripts/tools/k8s" && go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$v" \
      -o "$K8S_BIN.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl ./etcd)
  rm -rf "$K8S_BIN" && mv "$K8S_BIN.tmp" "$K8S_BIN"
}

# build_compose builds the docker compose CLI plugin from the module pinned in scripts/tools/compose
# (compose's go.mod has exclude directives, so `go install pkg@version` is refused).
build_compose() {
  have "$COMPOSE_BIN/docker-compose" && return
  log "building docker compose $COMPOSE_VERSION (about 4 minutes cold)"
  rm -rf "$COMPOSE_BIN.tmp" && mkdir -p "$COMPOSE_BIN.tmp"
  (cd "$TELEDOCK_ROOT/scripts/tools/compose" && go build -trimpath \
      -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
      -o "$COMPOSE_BIN.tmp/docker-compose" github.com/docker/compose/v5/cmd)
  rm -rf "$COMPOSE_BIN" && mv "$COMPOSE_BIN.tmp" "$COMPOSE_BIN"
}

# go_install DIR PKG@VERSION: builds one module's command into DIR (atomically).
go_install() {
  local dir=$1 pkg=$2
  have "$dir/$(basename "${pkg%@*}")" && return
  log "building $pkg"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  GOBIN="$dir.tmp" go install -trimpath -ldflags "-s -w" "$pkg"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

install_tools() {
  command -v go >/dev/null || die "Go is not installed (need Go 1.26 at /usr/local/go)"
  mkdir -p "$TOOLS_DIR"
  build_k8s
  go_install "$COREDNS_BIN" "github.com/coredns/coredns@$COREDNS_VERSION"
  go_install "$BUILDX_BIN" "github.com/docker/buildx/cmd/buildx@$BUILDX_VERSION"
  go_install "$HELM_BIN" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  go_install "$REGISTRY_BIN" "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
  if ! have "$PROTOC_BIN/protoc-gen-go-grpc"; then
    rm -rf "$PROTOC_BIN.tmp" && mkdir -p "$PROTOC_BIN.tmp"
    GOBIN="$PROTOC_BIN.tmp" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
    GOBIN="$PROTOC_BIN.tmp" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
    rm -rf "$PROTOC_BIN" && mv "$PROTOC_BIN.tmp" "$PROTOC_BIN"
  fi
  build_compose
  # buildx and compose are Docker CLI plugins.
  mkdir -p "$HOME/.docker/cli-plugins"
  cp -f "$BUILDX_BIN/buildx" "$HOME/.docker/cli-plugins/docker-buildx"
  cp -f "$COMPOSE_BIN/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
}

case "${1:-all}" in
  apt) install_apt ;;
  tools) install_tools ;;
  all) install_apt; install_tools ;;
  *) die "usage: $0 [apt|tools|all]" ;;
esac
