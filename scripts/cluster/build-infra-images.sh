#!/usr/bin/env bash
# Builds the images the test cluster itself needs and cannot pull: the pod sandbox (pause) and
# CoreDNS, FROM scratch with static binaries.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

CGO_ENABLED=0 go build -C "$TELEDOCK_ROOT" -trimpath -ldflags "-s -w" -o "$ctx/pause" ./scripts/cluster/pause
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
docker build -q -t registry.k8s.io/pause:3.6 "$ctx" >/dev/null

cp "$COREDNS_BIN/coredns" "$ctx/coredns"
printf 'FROM scratch\nCOPY coredns /coredns\nEXPOSE 53 53/udp\nENTRYPOINT ["/coredns"]\n' >"$ctx/Dockerfile"
docker build -q -t "teledock/coredns:$COREDNS_VERSION" "$ctx" >/dev/null
log "built registry.k8s.io/pause:3.6 and teledock/coredns:$COREDNS_VERSION"
