#!/usr/bin/env bash
# The two installs render the same objects, the chart lints clean, and both are accepted by
# a real kube-apiserver. Runs under hack/local-cluster.sh (`make test-install`):
#
# 1. `helm template` and `kubectl kustomize` give the same objects for the same settings:
#    the defaults <-> deploy/, verifier.enabled=false <-> overlays/without-verifier,
#    watchNamespace=access-tokens <-> overlays/namespace-restricted, hostNetwork=true <->
#    deploy/ with the Component overlays/host-network, proxy.enabled=true <-> overlays/proxy,
#    the webhook settings <-> the overlay docs/installation/kustomize.md shows
#    (tests/install/webhook). Normalisation, and all
#    of it: the Helm-only labels helm.sh/chart and app.kubernetes.io/instance, the label
#    app.kubernetes.io/managed-by when it says Helm, and the annotation
#    helm.sh/resource-policy are dropped; objects are sorted by kind, namespace, name.
#    Everything else (labels, args, ports, rules, CEL) must be equal. The chart renders with
#    namespace.create=true, as deploy/ includes the Namespace.
# 2. `helm lint --strict` with the default values and with non-default ones; a value the
#    schema does not know must fail.
# 3. Every render applies with --dry-run=server (schema, defaulting and admission) after the
#    CRDs are applied for real.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

hack/ensure-packages.sh jq
helm="$(hack/helm/build.sh)"
chart=charts/access-token-operator
release=(access-token-operator "$chart" --namespace access-token-operator)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0 passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# YAML stream -> sorted, normalised JSON array (kubectl parses; nothing is sent anywhere).
normalise() {
  kubectl create --dry-run=client -o json -f "$1" | jq -S -s '
    [.[] | (if .kind == "List" then .items[] else . end)
     | del(.metadata.labels["helm.sh/chart", "app.kubernetes.io/instance"])
     | if .metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
       then del(.metadata.labels["app.kubernetes.io/managed-by"]) else . end
     | del(.metadata.annotations["helm.sh/resource-policy"])
     | if .metadata.labels == {} then del(.metadata.labels) else . end
     | if .metadata.annotations == {} then del(.metadata.annotations) else . end]
    | sort_by(.kind, .metadata.namespace // "", .metadata.name)'
}

# compare NAME KUSTOMIZE-DIR HELM-ARGS...
compare() {
  local name=$1 dir=$2; shift 2
  kubectl kustomize "$dir" >"$work/$name.kustomize.yaml"
  "$helm" template "${release[@]}" --skip-tests --set namespace.create=true "$@" >"$work/$name.helm.yaml"
  normalise "$work/$name.kustomize.yaml" >"$work/$name.kustomize.json"
  normalise "$work/$name.helm.yaml" >"$work/$name.helm.json"
  local count settings="${*:-(defaults)}"
  count="$(jq 'length' "$work/$name.kustomize.json")"
  # Both empty would compare equal: the install must hold the operator's Deployment.
  if [ "$(jq '[.[] | select(.kind == "Deployment" and .metadata.name == "access-token-operator")] | length' "$work/$name.kustomize.json")" != 1 ]; then
    fail "$name: kubectl kustomize $dir renders no operator Deployment"
  elif diff -u --label "kubectl kustomize $dir" --label "helm template $settings" \
    "$work/$name.kustomize.json" "$work/$name.helm.json" >"$work/$name.diff"; then
    pass "$name: kubectl kustomize $dir and helm template $settings render the same $count objects"
  else
    fail "$name: kubectl kustomize $dir and helm template $settings differ:"
    head -n 80 "$work/$name.diff" >&2
  fi
}

# CRDs for real (kubectl create --dry-run=client and the server dry runs need their kinds),
# and the namespaces the namespaced objects go into.
kubectl apply --server-side --force-conflicts -f crds/access-token-operator.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s -f crds/access-token-operator.yaml >/dev/null
for namespace in access-token-operator access-tokens; do
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done

compare default deploy
compare without-verifier overlays/without-verifier --set verifier.enabled=false
compare namespace-restricted overlays/namespace-restricted --set watchNamespace=access-tokens
compare host-network tests/install/host-network --set hostNetwork=true
compare proxy overlays/proxy --set proxy.enabled=true
compare webhook tests/install/webhook --set verifier.service.clusterIP=10.0.0.200 \
  --set verifier.clientCA.enabled=true,verifier.clientCA.secretName=access-token-webhook-client-ca

# Lint: defaults, non-default values, and a value the strict schema must refuse.
nondefault=(--set hostNetwork=true,runtimeClassName=gvisor,replicaCount=1,verifier.clientCA.enabled=true
  --set image.repository=registry.example.com/ato,image.tag=dev,image.pullPolicy=Always
  --set 'extraEnv[0].name=KUBERNETES_SERVICE_HOST,extraEnv[0].value=10.0.0.1'
  --set 'networkPolicy.apiServer.cidrs[0]=10.0.0.0/24,serviceMonitor.enabled=true,prometheusRule.enabled=true'
  --set watchNamespace=access-tokens,podDisruptionBudget.enabled=false,priorityClass.create=false
  --set crds.keep=false,namespace.create=true)
if "$helm" lint --strict "$chart" >"$work/lint.log" 2>&1; then pass "helm lint --strict (defaults)"
else fail "helm lint --strict (defaults)"; cat "$work/lint.log" >&2; fi
if "$helm" lint --strict "$chart" "${nondefault[@]}" >"$work/lint.log" 2>&1; then pass "helm lint --strict (non-default values)"
else fail "helm lint --strict (non-default values)"; cat "$work/lint.log" >&2; fi
if "$helm" lint --strict "$chart" --set verifier.nosuchvalue=1 >"$work/lint.log" 2>&1; then
  fail "helm lint accepted a value that values.schema.json does not define"
else pass "values.schema.json refuses an unknown value"; fi

# The non-default render: what those values must change.
"$helm" template "${release[@]}" "${nondefault[@]}" --show-only templates/deployment.yaml >"$work/deployment.yaml"
normalise "$work/deployment.yaml" >"$work/nondefault.json"
# Applied below without the prometheus-operator's kinds (their CRDs are not installed here).
"$helm" template "${release[@]}" "${nondefault[@]}" --skip-tests --set serviceMonitor.enabled=false,prometheusRule.enabled=false \
  >"$work/nondefault.helm.yaml"
if jq -e '.[] | select(.kind == "Deployment") | .spec.template.spec
    | .hostNetwork == true and .dnsPolicy == "ClusterFirstWithHostNet" and .runtimeClassName == "gvisor"
      and (.containers[0].args | index("--verifier-bind=$(POD_IP):8443") != null
           and index("--probe-bind=$(POD_IP):8080") != null and index("--client-ca-file=/tls/ca.crt") != null
           and index("--leader-elect") == null)
      and (.containers[0].env | map(.name) | index("POD_IP") != null and .[-1] == "KUBERNETES_SERVICE_HOST")' \
    "$work/nondefault.json" >/dev/null; then
  pass "non-default values reach the Deployment (host network, POD_IP binds, client CA, extraEnv last)"
else fail "non-default values do not reach the Deployment as expected"; fi

# The API server accepts every render (schema, defaulting, admission; nothing is stored).
for render in "$work"/*.kustomize.yaml "$work"/*.helm.yaml; do
  if kubectl apply --server-side --force-conflicts --dry-run=server -f "$render" >"$work/apply.log" 2>&1; then
    pass "kube-apiserver accepts $(basename "$render")"
  else fail "kube-apiserver refuses $(basename "$render")"; cat "$work/apply.log" >&2; fi
done

# A real install, upgrade and uninstall: the CRDs are the release's (adopted from the kubectl
# apply above with --take-ownership), an upgrade updates them (--reset-values: without any
# value on its command line, helm upgrade reuses the last ones), an uninstall keeps them.
# No node runs the pods here: nothing waits for them.
crd=accesstokens.iam.accesstoken.io
if "$helm" install "${release[@]}" --take-ownership >"$work/helm.log" 2>&1 \
  && [ "$(kubectl get crd "$crd" -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" = keep ] \
  && "$helm" upgrade "${release[@]}" --set crds.keep=false --set podDisruptionBudget.enabled=false >>"$work/helm.log" 2>&1 \
  && [ -z "$(kubectl get crd "$crd" -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" ] \
  && ! kubectl get poddisruptionbudget -n access-token-operator access-token-operator >/dev/null 2>&1 \
  && "$helm" upgrade "${release[@]}" --reset-values >>"$work/helm.log" 2>&1 \
  && [ "$(kubectl get crd "$crd" -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" = keep ] \
  && "$helm" uninstall access-token-operator --namespace access-token-operator >>"$work/helm.log" 2>&1 \
  && kubectl get crd "$crd" >/dev/null \
  && ! kubectl get deployment -n access-token-operator access-token-operator >/dev/null 2>&1; then
  pass "helm install, upgrade (updates the CRDs' metadata), uninstall (keeps the CRDs)"
else fail "helm install/upgrade/uninstall"; cat "$work/helm.log" >&2; fi
# And the kustomize base for real, as README says: plain client-side `kubectl apply -k`.
if kubectl apply -k deploy >"$work/apply.log" 2>&1; then pass "kubectl apply -k deploy"
else fail "kubectl apply -k deploy"; cat "$work/apply.log" >&2; fi

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
