#!/usr/bin/env bash
# Says what of the local test cluster runs.
set -uo pipefail
. "$(dirname "$0")/../lib.sh"

for name in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  if pid=$(cluster_pid "$name"); then
    printf '%-24s running (pid %s)\n' "$name" "$pid"
  else
    printf '%-24s not running\n' "$name"
  fi
done
kc=$CLUSTER_STATE/conf/admin.kubeconfig
if [ -f "$kc" ] && "$K8S_BIN/kubectl" --kubeconfig "$kc" get --raw /readyz >/dev/null 2>&1; then
  "$K8S_BIN/kubectl" --kubeconfig "$kc" get nodes -o wide
  "$K8S_BIN/kubectl" --kubeconfig "$kc" get pods -A -o wide
else
  echo "API server: not answering"
fi
iptables -t raw -S TELEDOCK-ISOLATION >/dev/null 2>&1 && echo "isolation: Docker networks cut off from $POD_CIDR and $SERVICE_CIDR" || echo "isolation: not in place"
