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

step "intercept: the cluster's requests for echo are answered by a local container"
# A client pod inside the cluster, to make the requests the cluster would make.
"$KUBECTL" -n "$ns" delete pod demo-client --ignore-not-found --wait=false >/dev/null
"$KUBECTL" -n "$ns" run demo-client --image "teledock/echo:$VERSION" --image-pull-policy=Never >/dev/null
"$KUBECTL" -n "$ns" wait --for=condition=Ready pod/demo-client --timeout=120s >/dev/null
from_cluster() { "$KUBECTL" -n "$ns" exec demo-client -- /probe -timeout 10s http http://echo/; }
echo "before: $(from_cluster)"
# The local handler: a container in the daemon's network namespace, listening on 8080.
docker rm -f demo-handler >/dev/null 2>&1 || true
"$TELEDOCK" run -d --name demo-handler -e ECHO_TEXT="hello from my laptop" "teledock/echo:$VERSION" >/dev/null
"$TELEDOCK" list
"$TELEDOCK" intercept echo --port 8080:http
echo "during: $(from_cluster)"
"$TELEDOCK" status | sed -n '/Intercepts/,/DNS/p' | head -n -1
"$TELEDOCK" leave echo
echo "after:  $(from_cluster)"
docker rm -f demo-handler >/dev/null

step "compose: a compose project whose web service intercepts echo (x-teledock)"
proj=$(mktemp -d)
trap 'rm -rf "$proj"' EXIT
cat >"$proj/compose.yaml" <<YAML
name: teledock-demo
x-teledock:
  kubeconfig: $KUBECONFIG
  namespace: $ns
services:
  web:                        # runs locally, receives the cluster's traffic for echo
    image: teledock/echo:$VERSION
    environment: {ECHO_TEXT: "hello from my compose project"}
    x-teledock: {intercept: echo, port: "8080:http"}
  tools:                      # only reaches the cluster
    image: teledock/echo:$VERSION
    environment: {PORT: "8090", UDP_PORT: "8091"}
    x-teledock: {connect: true}
YAML
cat "$proj/compose.yaml"
(cd "$proj" && "$TELEDOCK" compose generate)
(cd "$proj" && docker compose -f compose.yaml -f .teledock/teledock-demo/compose.teledock.yaml up -d)
# The web container needs a moment to listen; poll with a deadline.
for _ in $(seq 50); do out=$(from_cluster 2>/dev/null) && [[ $out == *compose* ]] && break; sleep 0.2; done
echo "during: $(from_cluster)"
# tools reaches the cluster by name; echo is intercepted, so the answer is the local web service's.
(cd "$proj" && docker compose -f compose.yaml -f .teledock/teledock-demo/compose.teledock.yaml exec -T tools /probe http http://echo.$ns/)
(cd "$proj" && "$TELEDOCK" compose down)
echo "after:  $(from_cluster)"
"$KUBECTL" -n "$ns" delete pod demo-client --wait=false >/dev/null

step "versions"
"$TELEDOCK" version

step "quit: nothing stays behind"
"$TELEDOCK" quit
