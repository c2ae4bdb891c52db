#!/usr/bin/env bash
# Smoke test of the test cluster's nodes; run under `hack/local-cluster.sh --with-node`
# (make test-node). Both nodes register; a 2-replica hostNetwork Deployment of the pause image
# with the runtime class ato-host-network spreads over both nodes in a namespace enforcing
# the "restricted" Pod Security level; the same pod without the runtime class is rejected; a
# pod reads its projected ServiceAccount token and reaches kube-apiserver with it.
# With ATO_NODE_SMOKE_STATE set, writes the cluster directory and node IPs there, for
# tests/node/leftovers.sh once local-cluster.sh has returned.
set -euo pipefail

: "${ATO_NODE_NAMES:?run under hack/local-cluster.sh --with-node}"
if [ -n "${ATO_NODE_SMOKE_STATE:-}" ]; then
  mkdir -p "$(dirname "$ATO_NODE_SMOKE_STATE")"
  echo "$ATO_CLUSTER_DIR $ATO_NODE_IPS" >"$ATO_NODE_SMOKE_STATE"
fi
started=$SECONDS
step() { echo "smoke: $* ($((SECONDS - started))s)" >&2; }
pause_image="$(sed -n 3p < <("$(dirname "$0")/../../hack/node/build.sh"))"

step "nodes registered and Ready"
for node in $ATO_NODE_NAMES; do
  kubectl wait --for=condition=Ready --timeout=60s "node/$node" >/dev/null
done

ns=node-smoke
kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
# The restricted profile's container settings, which hostNetwork pods keep even when exempt.
security='{"runAsNonRoot": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}'
pod_spec() { # runtime-class-or-empty
  local rc=""
  [ -n "$1" ] && rc="\"runtimeClassName\": \"$1\","
  cat <<EOS
{ $rc "hostNetwork": true, "automountServiceAccountToken": false,
  "containers": [{"name": "pause", "image": "$pause_image", "imagePullPolicy": "Never",
                  "securityContext": $security}] }
EOS
}

step "a hostNetwork pod without the runtime class is rejected by Pod Security"
if out="$(kubectl -n "$ns" run no-class --image="$pause_image" --overrides="{\"spec\": $(pod_spec "")}" 2>&1)"; then
  echo "smoke: FAIL: a hostNetwork pod without runtime class was admitted: $out" >&2; exit 1
fi
grep -q 'violates PodSecurity "restricted:latest".*host namespaces' <<<"$out" \
  || { echo "smoke: FAIL: rejected for another reason: $out" >&2; exit 1; }

step "a 2-replica hostNetwork Deployment with the runtime class spreads over both nodes"
kubectl -n "$ns" apply -f - >/dev/null <<EOF2
{ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pause"},
  "spec": { "replicas": 2, "selector": {"matchLabels": {"app": "pause"}},
    "template": { "metadata": {"labels": {"app": "pause"}},
      "spec": $(pod_spec "$ATO_HOST_NETWORK_RUNTIME_CLASS" | sed 's/^{/{ "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io\/hostname", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "pause"}}}],/') } } }
EOF2
kubectl -n "$ns" wait --for=condition=Available --timeout=120s deployment/pause >/dev/null
placed="$(kubectl -n "$ns" get pods -l app=pause -o jsonpath='{range .items[*]}{.spec.nodeName}={.status.podIP}{"\n"}{end}' | sort)"
expected="$(paste -d= <(tr ' ' '\n' <<<"$ATO_NODE_NAMES") <(tr ' ' '\n' <<<"$ATO_NODE_IPS") | sort)"
[ "$placed" = "$expected" ] || { echo "smoke: FAIL: pods on $placed, want one per node with its IP: $expected" >&2; exit 1; }

step "a pod reads its projected ServiceAccount token and reaches kube-apiserver with it"
# No shell in the pause image: the check runs on the host through the pod's own files (its
# projected token volume, mounted by the kubelet under the node's root directory).
kubectl -n "$ns" apply -f - >/dev/null <<EOF2
{ "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "token"},
  "spec": $(pod_spec "$ATO_HOST_NETWORK_RUNTIME_CLASS" | sed 's/"automountServiceAccountToken": false/"automountServiceAccountToken": true/') }
EOF2
kubectl -n "$ns" wait --for=condition=Ready --timeout=60s pod/token >/dev/null
uid="$(kubectl -n "$ns" get pod token -o jsonpath='{.metadata.uid}')"
volume="$(echo "$ATO_CLUSTER_DIR"/node/*/kubelet/pods/"$uid"/volumes/kubernetes.io~projected/kube-api-access-*)"
whoami="$(curl -fsS --cacert "$volume/ca.crt" -H "Authorization: Bearer $(cat "$volume/token")" \
  -X POST -H 'Content-Type: application/json' \
  -d '{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}' \
  "https://$ATO_API_HOST:$ATO_API_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews")"
grep -q "\"username\": *\"system:serviceaccount:$ns:default\"" <<<"$whoami" \
  || { echo "smoke: FAIL: token not accepted as the pod's ServiceAccount: $whoami" >&2; exit 1; }
step "ok"
