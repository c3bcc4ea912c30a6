#!/usr/bin/env bash
# The demo on the built-in cluster: deploys the sample app and shows what teledock can do so far.
# Run through `make demo`, which starts the cluster and builds everything first.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${KUBECTL:?} ${KUBECONFIG:?} ${TELEDOCK:?} ${VERSION:?}"
export KUBECONFIG

ns=teledock-demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "the cluster"
"$KUBECTL" get nodes -o wide

step "the sample app: echo (Deployment + Service) in namespace $ns"
"$KUBECTL" create namespace "$ns" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
sed -e "s#{{.Name}}#echo#g" -e "s#{{.Image}}#teledock/echo:$VERSION#g" -e "s#{{.Text}}#hello from the cluster#g" \
  "$TELEDOCK_ROOT/e2e/testdata/echo.yaml" | "$KUBECTL" -n "$ns" apply -f -
"$KUBECTL" -n "$ns" rollout status deployment/echo --timeout=120s

step "install the traffic-manager"
"$TELEDOCK" install

step "connect: a daemon container that reaches the cluster (namespace $ns)"
"$TELEDOCK" connect -n "$ns"
"$TELEDOCK" status

step "a local container reaches the sample app by its cluster name"
# Plain Docker containers cannot reach the cluster (the test cluster cuts them off); this one runs in
# the daemon's network namespace.
"$TELEDOCK" run --rm --entrypoint /probe "teledock/echo:$VERSION" http http://echo/
"$TELEDOCK" run --rm --entrypoint /probe "teledock/echo:$VERSION" http "http://echo.$ns.svc.cluster.local/"

step "versions"
"$TELEDOCK" version

step "quit: nothing stays behind"
"$TELEDOCK" quit
