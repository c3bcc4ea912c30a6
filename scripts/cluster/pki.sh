#!/usr/bin/env bash
# Makes the test cluster's PKI with openssl: a CA, the API server's serving certificate, client
# certificates for each component and the admin, and the service-account signing key. Kept across
# restarts; remade when the host's addresses (part of the SANs) change.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

pki=$CLUSTER_STATE/pki
mkdir -p "$pki"
cd "$pki"

hip=$(host_ip)
gw=$(docker_gateway_ip)
[ -n "$hip" ] || die "cannot tell this host's address (ip route get)"
sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,DNS:host.docker.internal,DNS:$CLUSTER_NODE,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,IP:$hip"
[ -n "$gw" ] && sans="$sans,IP:$gw"

if [ -f ca.crt ] && [ "$(cat sans 2>/dev/null)" = "$sans" ]; then
  exit 0
fi
log "making cluster PKI (API server SANs: $sans)"
rm -f ./*.crt ./*.key ./*.csr ./*.srl sans

openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -nodes -key ca.key -subj "/CN=teledock-test-cluster-ca" -days 3650 -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

# cert NAME SUBJECT EXTKEYUSAGE [SANS]
cert() {
  local name=$1 subj=$2 eku=$3 san=${4:-}
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$ext"
  openssl genrsa -out "$name.key" 2048 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

cert apiserver "/CN=kube-apiserver" serverAuth "$sans"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert kubelet "/O=system:nodes/CN=system:node:$CLUSTER_NODE" clientAuth
cert kubelet-serving "/CN=$CLUSTER_NODE" serverAuth "DNS:$CLUSTER_NODE,DNS:localhost,IP:127.0.0.1,IP:$hip"

openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
chmod 600 ./*.key
echo "$sans" >sans
