#!/usr/bin/env bash
# Starts the local test cluster: upstream etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy (iptables mode) built from Go modules, a private containerd
# with Debian's runc and CNI plugins, and CoreDNS. Loads the given images into the node, cuts Docker
# networks off the cluster's subnets, and writes the admin kubeconfig to .cluster/kubeconfig.
# Idempotent: a healthy cluster is kept; a broken or half-dead one is cleaned up and started anew.
#
#   scripts/cluster/up.sh [IMAGE ...]     (needs root)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

[ "$(id -u)" -eq 0 ] || die "the built-in test cluster needs root on this machine (teledock itself does not)"
images=("$@")
PKI=$CLUSTER_STATE/pki
CONF=$CLUSTER_STATE/conf
total_start=$SECONDS

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$CONF/admin.kubeconfig" "$@"; }

# kubeconfig FILE USER SERVER: writes a client-certificate kubeconfig that verifies the server's TLS.
kubeconfig() {
  local file=$1 user=$2 server=$3
  cat >"$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: teledock
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$user.crt")
    client-key-data: $(base64 -w0 "$PKI/$user.key")
contexts:
- name: teledock
  context:
    cluster: teledock
    user: $user
current-context: teledock
KC
  chmod 600 "$file"
}

# start NAME CMD...: runs a component in the background with its own log and pid file.
start() {
  local name=$1
  shift
  if cluster_pid "$name" >/dev/null; then
    return
  fi
  setsid nohup "$@" >"$CLUSTER_LOGS/$name.log" 2>&1 </dev/null &
  write_pid "$name" $!
}

# alive NAME: fails (and shows the log) when a component died.
alive() {
  if ! cluster_pid "$1" >/dev/null; then
    log "$1 exited; last lines of $CLUSTER_LOGS/$1.log:"
    tail -n 30 "$CLUSTER_LOGS/$1.log" >&2 || true
    return 1
  fi
}

healthy() {
  control_plane_up || return 1
  # The node stays Ready for a while after its kubelet died; the processes tell at once.
  cluster_pid kubelet >/dev/null && cluster_pid kube-proxy >/dev/null || return 1
  node_ready && dns_answers
}

# control_plane_up: the node's runtime and the control plane run and answer, so a dead kubelet or
# kube-proxy can be started again alone, keeping the cluster's state and its running pods.
control_plane_up() {
  [ -f "$CONF/admin.kubeconfig" ] || return 1
  local c
  for c in containerd etcd kube-apiserver kube-controller-manager kube-scheduler; do
    cluster_pid "$c" >/dev/null || return 1
  done
  kubectl_admin get --raw /readyz >/dev/null 2>&1
}

node_ready() {
  [ "$(kubectl_admin get node "$CLUSTER_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

dns_answers() {
  [ "$(dig +short +time=1 +tries=1 @"$DNS_SVC_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" 2>/dev/null)" = "$KUBERNETES_SVC_IP" ]
}

prepare_host() {
  mkdir -p "$CLUSTER_STATE" "$CLUSTER_RUN" "$CLUSTER_LOGS" "$CONF" "$CLUSTER_STATE/cni/net.d"
  sysctl -qw net.ipv4.ip_forward=1
  modprobe br_netfilter 2>/dev/null || true
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Pods' network namespaces are mounted under /run/netns. Make it a shared mount of its own now,
  # as `ip netns add` would on first use: were that to happen later, its bind mount would shadow
  # the pods' netns mounts and containerd could no longer remove them (pods stuck terminating).
  mkdir -p /run/netns
  mountpoint -q /run/netns || mount --bind /run/netns /run/netns
  mount --make-shared /run/netns
  "$TELEDOCK_ROOT/scripts/cluster/pki.sh"
}

start_containerd() {
  cat >"$CONF/containerd.toml" <<TOML
version = 2
root = "$CLUSTER_STATE/containerd"
state = "$CLUSTER_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # Without it every pod sandbox fails with "can't get final child's PID from pipe" on these VMs.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CONF/certs.d"
TOML
  mkdir -p "$CONF/certs.d/$REGISTRY_HOST"
  cat >"$CONF/certs.d/$REGISTRY_HOST/hosts.toml" <<TOML
server = "http://$REGISTRY_HOST"
[host."http://$REGISTRY_HOST"]
  capabilities = ["pull", "resolve"]
TOML
  cat >"$CLUSTER_STATE/cni/net.d/10-teledock.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "teledock",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
               "dataDir": "$CLUSTER_STATE/cni/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  start containerd containerd --config "$CONF/containerd.toml"
  wait_for "containerd" 30 ctr --address "$CONTAINERD_SOCK" version
}

# load_image REF: copies an image from the Docker engine into the node's containerd.
load_image() {
  docker save "$1" | ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack - >/dev/null
}

load_images() {
  # The sandbox image cannot be pulled here; build it from the project's own pause program.
  if ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qx "registry.k8s.io/pause:3.6"; then
    if ! docker image inspect registry.k8s.io/pause:3.6 >/dev/null 2>&1; then
      "$TELEDOCK_ROOT/scripts/cluster/build-infra-images.sh"
    fi
    load_image registry.k8s.io/pause:3.6
  fi
  if ! docker image inspect "teledock/coredns:$COREDNS_VERSION" >/dev/null 2>&1; then
    "$TELEDOCK_ROOT/scripts/cluster/build-infra-images.sh"
  fi
  local img id
  touch "$CLUSTER_RUN/images.loaded"
  for img in "teledock/coredns:$COREDNS_VERSION" "${images[@]}"; do
    id=$(docker image inspect -f '{{.Id}}' "$img") || die "image $img is not in Docker: run 'make images'"
    # Loaded before with this content: nothing to do (the record lives as long as the node does).
    grep -qx "$img $id" "$CLUSTER_RUN/images.loaded" && continue
    log "   loading $img"
    load_image "$img"
    echo "$img $id" >>"$CLUSTER_RUN/images.loaded"
  done
}

# start_registry runs the cluster's image registry (storage under the cluster's state, so down.sh
# empties it) and advertises it in kube-public/local-registry-hosting once the API server is up.
start_registry() {
  mkdir -p "$CLUSTER_STATE/registry"
  write_if_changed "$CONF/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $CLUSTER_STATE/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${REGISTRY_HOST##*:}
  secret: teledock-test-cluster
YAML
  start registry "$REGISTRY_BIN/registry" serve "$CONF/registry.yml"
  wait_for "registry" 30 curl -fsS -o /dev/null "http://$REGISTRY_HOST/v2/"
}

advertise_registry() {
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "$REGISTRY_HOST"
    help: "teledock's built-in test cluster: push with docker push $REGISTRY_HOST/NAME:TAG"
YAML
}

start_control_plane() {
  local hip
  hip=$(host_ip)
  start etcd "$K8S_BIN/etcd" --name teledock --data-dir "$CLUSTER_STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster teledock=http://127.0.0.1:2380 --quota-backend-bytes 2147483648
  wait_for "etcd" 60 bash -c ". '$TELEDOCK_ROOT/scripts/lib.sh'; cluster_pid etcd >/dev/null && curl -fsS http://127.0.0.1:2379/health" || { alive etcd; die "etcd did not become healthy"; }

  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$hip" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname \
    --authorization-mode Node,RBAC --anonymous-auth=false \
    --enable-admission-plugins NodeRestriction \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --allow-privileged=true --profiling=false
  wait_for "kube-apiserver /readyz" 120 kubectl_admin get --raw /readyz || { alive kube-apiserver; die "kube-apiserver is not ready"; }

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$CONF/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CONF/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$CONF/controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials --allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" --leader-elect=false --bind-address 127.0.0.1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$CONF/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CONF/scheduler.kubeconfig" \
    --authorization-kubeconfig "$CONF/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1
}

# write_if_changed FILE: writes stdin to FILE unless FILE holds it already. kube-proxy exits when
# its config file changes, even to the same content, so a running one must not see it rewritten.
write_if_changed() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then
    rm -f "$tmp"
  else
    mv "$tmp" "$1"
  fi
}

start_node() {
  local hip
  hip=$(host_ip)
  write_if_changed "$CONF/kubelet.yaml" <<KY
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
clusterDomain: "$CLUSTER_DOMAIN"
clusterDNS: ["$DNS_SVC_IP"]
cgroupDriver: cgroupfs
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
failSwapOn: false
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# The disk is shared with Docker and build caches; never evict test pods for disk pressure.
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
KY
  start kubelet "$K8S_BIN/kubelet" --config "$CONF/kubelet.yaml" --kubeconfig "$CONF/kubelet.kubeconfig" \
    --root-dir "$CLUSTER_STATE/kubelet" --hostname-override "$CLUSTER_NODE" --node-ip "$hip"

  write_if_changed "$CONF/kube-proxy.yaml" <<KP
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$CONF/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$CLUSTER_NODE"
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
KP
  start kube-proxy "$K8S_BIN/kube-proxy" --config "$CONF/kube-proxy.yaml"
  wait_for "node $CLUSTER_NODE Ready" 120 node_ready || { alive kubelet; alive kube-proxy; kubectl_admin describe node "$CLUSTER_NODE" >&2 || true; die "node is not Ready"; }
}

# isolate: Docker containers must not reach pod IPs, service IPs or the cluster DNS except through
# teledock, so no test passes by going around it. Pods still reach everything (FORWARD accept).
isolate() {
  iptables -t raw -N TELEDOCK-ISOLATION 2>/dev/null || iptables -t raw -F TELEDOCK-ISOLATION
  for cidr in "$POD_CIDR" "$SERVICE_CIDR"; do
    iptables -t raw -A TELEDOCK-ISOLATION -i docker0 -d "$cidr" -j DROP
    iptables -t raw -A TELEDOCK-ISOLATION -i br-+ -d "$cidr" -j DROP
  done
  iptables -t raw -C PREROUTING -j TELEDOCK-ISOLATION 2>/dev/null || iptables -t raw -I PREROUTING -j TELEDOCK-ISOLATION
  # dockerd sets the FORWARD policy to DROP, which would also drop pod traffic on the CNI bridge.
  iptables -N TELEDOCK-FORWARD 2>/dev/null || iptables -F TELEDOCK-FORWARD
  iptables -A TELEDOCK-FORWARD -i "$CNI_BRIDGE" -j ACCEPT
  iptables -A TELEDOCK-FORWARD -o "$CNI_BRIDGE" -j ACCEPT
  iptables -C FORWARD -j TELEDOCK-FORWARD 2>/dev/null || iptables -I FORWARD -j TELEDOCK-FORWARD
}

deploy_dns() {
  sed -e "s/@DNS_SVC_IP@/$DNS_SVC_IP/g" -e "s/@CLUSTER_DOMAIN@/$CLUSTER_DOMAIN/g" \
      -e "s#@COREDNS_IMAGE@#teledock/coredns:$COREDNS_VERSION#g" \
      "$TELEDOCK_ROOT/scripts/cluster/coredns.yaml" | kubectl_admin apply -f - >/dev/null
  wait_for "CoreDNS to answer at $DNS_SVC_IP" 120 dns_answers || {
    kubectl_admin -n kube-system get pods -o wide >&2 || true
    kubectl_admin -n kube-system describe pods -l k8s-app=kube-dns >&2 || true
    die "CoreDNS does not answer"
  }
}

write_kubeconfig() {
  mkdir -p "$CLUSTER_DIR"
  kubeconfig "$KUBECONFIG_OUT" admin "https://127.0.0.1:$API_PORT"
  log "admin kubeconfig: $KUBECONFIG_OUT"
}

configure() {
  local server=https://127.0.0.1:$API_PORT
  kubeconfig "$CONF/admin.kubeconfig" admin "$server"
  kubeconfig "$CONF/controller-manager.kubeconfig" controller-manager "$server"
  kubeconfig "$CONF/scheduler.kubeconfig" scheduler "$server"
  kubeconfig "$CONF/kubelet.kubeconfig" kubelet "$server"
  kubeconfig "$CONF/kube-proxy.kubeconfig" kube-proxy "$server"
}

"$TELEDOCK_ROOT/scripts/docker-up.sh"
if healthy; then
  log "cluster is already up"
  phase "images" load_images
  phase "registry" start_registry
  phase "isolation" isolate
elif control_plane_up; then
  log "the control plane runs; starting the node's components that stopped"
  phase "node" start_node
  phase "images" load_images
  phase "registry" start_registry
  phase "isolation" isolate
  wait_for "cluster DNS" 120 dns_answers || die "cluster DNS does not answer"
else
  if [ -d "$CLUSTER_RUN" ] || [ -d "$CLUSTER_STATE/etcd" ]; then
    phase "clean up what a previous cluster left" "$TELEDOCK_ROOT/scripts/cluster/down.sh"
  fi
  phase "host" prepare_host
  configure
  phase "containerd" start_containerd
  phase "images" load_images
  phase "control plane" start_control_plane
  phase "node" start_node
  phase "registry" start_registry
  phase "isolation" isolate
  phase "dns" deploy_dns
fi
advertise_registry
write_kubeconfig
log "cluster up in $((SECONDS - total_start))s"
