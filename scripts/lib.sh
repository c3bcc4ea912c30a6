# Common settings and helpers for teledock's scripts. Source it; it changes nothing by itself.
# shellcheck shell=bash

TELEDOCK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
. "$TELEDOCK_ROOT/scripts/versions.env"

# Build outputs that survive across clones (CI runs in a fresh clone on the same machine).
TELEDOCK_CACHE=${TELEDOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teledock}
TOOLS_DIR=$TELEDOCK_CACHE/tools
K8S_BIN=$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION
COREDNS_BIN=$TOOLS_DIR/coredns-$COREDNS_VERSION
HELM_BIN=$TOOLS_DIR/helm-$HELM_VERSION
BUILDX_BIN=$TOOLS_DIR/buildx-$BUILDX_VERSION
COMPOSE_BIN=$TOOLS_DIR/compose-$COMPOSE_VERSION
PROTOC_BIN=$TOOLS_DIR/protoc-gen-$PROTOC_GEN_GO_VERSION-$PROTOC_GEN_GO_GRPC_VERSION
REGISTRY_BIN=$TOOLS_DIR/registry-$REGISTRY_VERSION

# The test cluster's machine-wide state: one cluster per machine, whichever clone started it.
CLUSTER_STATE=/var/lib/teledock-cluster
CLUSTER_RUN=/run/teledock-cluster
CLUSTER_LOGS=/var/log/teledock/cluster
CLUSTER_NODE=teledock-node
POD_CIDR=10.244.0.0/16
NODE_POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
CNI_BRIDGE=tdk0
API_PORT=6443
CONTAINERD_SOCK=$CLUSTER_RUN/containerd/containerd.sock
# The cluster's image registry, on the host's loopback: Docker pushes to it and the node's containerd
# pulls from it, both by this name; the cluster advertises it (KEP-1755) for `teledock install`.
REGISTRY_HOST=localhost:5001

# The repo's view of the cluster.
CLUSTER_DIR=$TELEDOCK_ROOT/.cluster
KUBECONFIG_OUT=$CLUSTER_DIR/kubeconfig

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# phase NAME CMD...: runs CMD and prints how long it took.
phase() {
  local name=$1 start=$SECONDS
  shift
  log "==> $name"
  "$@"
  log "<== $name done in $((SECONDS - start))s"
}

# wait_for DESC TIMEOUT CMD...: polls CMD every half second until it succeeds or TIMEOUT seconds pass.
wait_for() {
  local desc=$1 timeout=$2 deadline=$((SECONDS + $2)) last=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    if [ $((SECONDS - last)) -ge 10 ]; then
      log "   still waiting for $desc ($((deadline - SECONDS))s left)"
      last=$SECONDS
    fi
    sleep 0.5
  done
}

host_ip() { ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="src") {print $(i+1); exit}}'; }
docker_gateway_ip() { ip -4 addr show docker0 2>/dev/null | awk '/inet /{sub(/\/.*/,"",$2); print $2; exit}'; }

# proc_start PID: the process's start time (clock ticks since boot, /proc/PID/stat field 22), or
# nothing when there is no such process. A pid with its start time names one process for good:
# after a crash, a pid file's number may belong to another process by now (dockerd, say).
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # Fields after "pid (comm) " start at field 3; the start time is field 22.
  stat=${stat##*) }
  set -- $stat
  echo "${20}"
}

# write_pid NAME PID: records the component's process in its pid file.
write_pid() { echo "$2 $(proc_start "$2")" >"$CLUSTER_RUN/$1.pid"; }

# cluster_pid NAME: prints the component's pid when its pid file names a process that is still
# the one started (same start time); fails otherwise.
cluster_pid() {
  local pid start
  read -r pid start <"$CLUSTER_RUN/$1.pid" 2>/dev/null || return 1
  [ -n "$pid" ] && [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ] || return 1
  echo "$pid"
}
