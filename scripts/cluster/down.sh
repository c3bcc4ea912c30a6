#!/usr/bin/env bash
# Stops the local test cluster and removes everything it put on the machine: processes, containerd
# containers and their shims, mounts, network namespaces, the CNI bridge, netfilter rules and pid
# files. Works on a cluster killed mid-flight. Idempotent. Docker's own containers are left alone.
#
#   scripts/cluster/down.sh     (needs root)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

[ "$(id -u)" -eq 0 ] || die "stopping the built-in test cluster needs root"

# stop NAME: TERM then KILL the component from its pid file, and any stray copy of its binary.
stop() {
  local name=$1 pid
  local pids=()
  # Only the process the pid file names, not whatever has its number now (see cluster_pid).
  pid=$(cluster_pid "$name") && pids+=("$pid")
  # Strays: a killed session may have lost the pid file but not the process.
  while read -r p; do pids+=("$p"); done < <(pgrep -f "^$K8S_BIN/$name( |$)" 2>/dev/null || true)
  [ "$name" = registry ] && while read -r p; do pids+=("$p"); done < <(pgrep -f "^$REGISTRY_BIN/registry serve" 2>/dev/null || true)
  [ "$name" = containerd ] && while read -r p; do pids+=("$p"); done < <(pgrep -f "^containerd --config $CLUSTER_STATE/conf/containerd.toml" 2>/dev/null || true)
  [ ${#pids[@]} -eq 0 ] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do
    local any=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && any=1; done
    [ $any -eq 0 ] && return 0
    sleep 0.2
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

stop kubelet
stop kube-proxy
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd
stop registry

# Pod containers: kill their shims (each runs with our containerd's address) and their processes.
if [ -S "$CONTAINERD_SOCK" ]; then
  for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true
  done
fi
stop containerd
for p in $(pgrep -f "containerd-shim.*-address $CONTAINERD_SOCK" 2>/dev/null || true); do
  # The shim's children are the pod's processes; kill the whole tree.
  pkill -KILL -P "$p" 2>/dev/null || true
  kill -KILL "$p" 2>/dev/null || true
done
# runc state of our containers (in case a shim was gone but the container process remained).
if [ -d "$CLUSTER_RUN/runc" ] || [ -d /run/containerd/runc/k8s.io ]; then
  for st in /run/containerd/runc/k8s.io/*/state.json; do
    [ -f "$st" ] || continue
    pid=$(sed -n 's/.*"init_process_pid":\([0-9]*\).*/\1/p' "$st")
    start=$(sed -n 's/.*"init_process_start":\([0-9]*\).*/\1/p' "$st")
    # Only if that pid is still the container's process, not a later one with its number.
    [ -n "$pid" ] && [ -n "$start" ] && [ "$(proc_start "$pid")" = "$start" ] && kill -KILL "$pid" 2>/dev/null || true
  done
fi

# Mounts under the cluster's directories and the CNI network namespaces, deepest first.
umount_under() {
  local dir=$1
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
umount_under "$CLUSTER_STATE"
umount_under "$CLUSTER_RUN"
umount_under /run/containerd/io.containerd.grpc.v1.cri
cni_netns_mounts() { awk '$5 ~ "^/run/netns/cni-" {print $5}' /proc/self/mountinfo; }
for ns in $(cni_netns_mounts); do umount "$ns" 2>/dev/null || true; done
# A bind mount of /run/netns made after a pod's netns was (`ip netns add` makes one) shadows that
# netns's mount: it can then be neither unmounted nor removed. Drop the bind mounts to reach them.
if [ -n "$(cni_netns_mounts)" ]; then
  while mountpoint -q /run/netns && umount -l /run/netns 2>/dev/null; do :; done
  for ns in $(cni_netns_mounts); do umount -l "$ns" 2>/dev/null || true; done
fi
rm -f /run/netns/cni-* 2>/dev/null || true
# up.sh made /run/netns a mount of its own; with no namespace left in it (none of the user's
# either), it goes too.
if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
  while mountpoint -q /run/netns && umount /run/netns 2>/dev/null; do :; done
fi

# Network: the CNI bridge (veths go with their namespaces) and netfilter rules.
ip link del "$CNI_BRIDGE" 2>/dev/null || true
if [ -x "$K8S_BIN/kube-proxy" ]; then
  "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi
# Anything kube-proxy's cleanup missed (it only removes what its current mode knows).
for table in filter nat mangle raw; do
  iptables -t "$table" -S 2>/dev/null | awk '/^-A/ && / -j (KUBE|TELEDOCK|CNI)-/' | sed 's/^-A/-D/' | while read -r rule; do
    eval "iptables -t $table $rule" 2>/dev/null || true
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N (KUBE|TELEDOCK|CNI)-/{print $2}'); do
    iptables -t "$table" -F "$chain" 2>/dev/null || true
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N (KUBE|TELEDOCK|CNI)-/{print $2}'); do
    iptables -t "$table" -X "$chain" 2>/dev/null || true
  done
done
ip6tables -t raw -S >/dev/null 2>&1 && for table in filter nat mangle; do
  ip6tables -t "$table" -S 2>/dev/null | awk '/^-A/ && / -j KUBE-/' | sed 's/^-A/-D/' | while read -r rule; do
    eval "ip6tables -t $table $rule" 2>/dev/null || true
  done
  for chain in $(ip6tables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
    ip6tables -t "$table" -F "$chain" 2>/dev/null || true; ip6tables -t "$table" -X "$chain" 2>/dev/null || true
  done
done

# State: everything but the PKI and the image store is made anew at the next start.
rm -rf "$CLUSTER_RUN" "$CLUSTER_STATE/etcd" "$CLUSTER_STATE/kubelet" "$CLUSTER_STATE/cni/ipam" \
  /var/lib/cni/networks/teledock /var/lib/cni/results/teledock-* 2>/dev/null || true
# containerd's metadata refers to sandboxes that no longer exist; keep its content store (images)
# but drop the rest so the next start is clean.
rm -rf "$CLUSTER_STATE/containerd/io.containerd.grpc.v1.cri" "$CLUSTER_STATE/containerd/io.containerd.runtime.v2.task" 2>/dev/null || true
rm -f "$KUBECONFIG_OUT"
log "cluster is down"
