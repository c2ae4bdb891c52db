#!/usr/bin/env bash
# What adopters of the chart rely on beyond the default install, checked against a real
# kube-apiserver. Runs under hack/local-cluster.sh (`make test-install`, after compare.sh):
#
# 1. As a subchart: a parent chart that depends on it (with a `condition` and `global`
#    values) renders and lints under the strict values schema.
# 2. No fixed UID: the pods set runAsNonRoot but no runAsUser/runAsGroup (OpenShift's
#    restricted-v2 assigns one), and the Deployment's pod template is admitted as a Pod by
#    Pod Security `restricted` (server dry run in a namespace enforcing it); a UID set through
#    podSecurityContext reaches the pod.
# 3. extraArgs reach the container's args, last.
# 4. The Grafana dashboard ConfigMap carries the sidecar label and exactly
#    deploy/grafana/access-token-operator.json (the chart's copy must equal it).
# 5. The ServiceMonitors (chart and overlays/monitoring) keep the series' own labels
#    (honorLabels), and take extra labels.
# 6. `helm test`: its objects render and are admitted (server dry run, restricted).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

hack/ensure-packages.sh jq
helm="$(hack/helm/build.sh)"
chart=charts/access-token-operator
namespace=ato-adopters
release=(access-token-operator "$chart" --namespace "$namespace")
work="$(mktemp -d)"
trap 'rm -rf "$work"; kubectl delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true' EXIT
failures=0 passed=0
pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
# YAML stream -> JSON array (kubectl parses; nothing is sent anywhere).
as_json() { kubectl create --dry-run=client -o json -f "$1" | jq -s '[.[] | (if .kind == "List" then .items[] else . end)]'; }

kubectl apply --server-side --force-conflicts -f crds/access-token-operator.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s -f crds/access-token-operator.yaml >/dev/null
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label --overwrite namespace "$namespace" pod-security.kubernetes.io/enforce=restricted >/dev/null

# 1. A parent chart with this one as a dependency, as an umbrella chart or an Argo CD "app of
# charts" has it: Helm hands the subchart `global` and the condition's `enabled`.
mkdir -p "$work/parent/charts" "$work/parent/templates"
cp -r "$chart" "$work/parent/charts/"
cat >"$work/parent/Chart.yaml" <<YAML
apiVersion: v2
name: platform
version: 1.0.0
dependencies:
  - {name: access-token-operator, version: "*", condition: access-token-operator.enabled}
YAML
printf 'global: {imageRegistry: registry.example.com}\naccess-token-operator: {enabled: true}\n' >"$work/parent/values.yaml"
if "$helm" template platform "$work/parent" --namespace "$namespace" >"$work/parent.yaml" 2>"$work/parent.log" \
  && [ "$(as_json "$work/parent.yaml" | jq '[.[] | select(.kind == "Deployment")] | length')" = 1 ] \
  && "$helm" lint --strict "$work/parent" --with-subcharts >>"$work/parent.log" 2>&1; then
  pass "as a subchart with global and a condition: renders and lints"
else fail "as a subchart"; cat "$work/parent.log" >&2; fi

# 2. No fixed UID, and admitted by Pod Security restricted as the kubelet would see it (a
# Pod's ServiceAccount must exist even for a dry run: create the ones the renders name).
for account in access-token-operator access-token-operator-test; do
  kubectl create serviceaccount "$account" -n "$namespace" >/dev/null
done
"$helm" template "${release[@]}" --skip-tests >"$work/default.yaml"
as_json "$work/default.yaml" >"$work/default.json"
jq '.[] | select(.kind == "Deployment") | {apiVersion: "v1", kind: "Pod",
      metadata: {name: "pod-template", namespace: .metadata.namespace},
      spec: (.spec.template.spec | del(.priorityClassName))}' \
  "$work/default.json" >"$work/pod.json"
if jq -e '.spec | .securityContext.runAsNonRoot == true
      and ([.. | objects | select(has("runAsUser") or has("runAsGroup"))] | length == 0)' "$work/pod.json" >/dev/null \
  && kubectl create --dry-run=server -f "$work/pod.json" >"$work/pod.log" 2>&1; then
  pass "the pods pin no UID and Pod Security restricted admits them"
else fail "the pods pin a UID or restricted refuses them"; cat "$work/pod.log" >&2; fi
"$helm" template "${release[@]}" --skip-tests --show-only templates/deployment.yaml \
  --set podSecurityContext.runAsUser=1000700000 --set 'extraArgs={--lease-duration-seconds=30,--verifier-idle-timeout-seconds=60}' \
  >"$work/values.yaml"
if as_json "$work/values.yaml" | jq -e '.[] | select(.kind == "Deployment") | .spec.template.spec
    | .securityContext.runAsUser == 1000700000 and .securityContext.runAsNonRoot == true
      and .containers[0].args[-2:] == ["--lease-duration-seconds=30", "--verifier-idle-timeout-seconds=60"]' >/dev/null; then
  pass "podSecurityContext and extraArgs (3.) reach the Deployment"
else fail "podSecurityContext or extraArgs do not reach the Deployment"; fi

# The webhook's needs (docs/installation/apiserver-webhook.md): a client CA of its own, not
# the serving Secret's ca.crt, and a fixed ClusterIP to write into kube-apiserver's kubeconfig.
"$helm" template "${release[@]}" --skip-tests --show-only templates/deployment.yaml \
  --set verifier.clientCA.enabled=true,verifier.clientCA.secretName=webhook-client-ca \
  --set verifier.service.clusterIP=10.0.0.200 >"$work/webhook.yaml"
as_json "$work/webhook.yaml" >"$work/webhook.json"
if jq -e '(.[] | select(.kind == "Deployment") | .spec.template.spec
      | (.containers[0].args | index("--client-ca-file=/client-ca/ca.crt") != null)
        and (.containers[0].volumeMounts | map(.mountPath) | index("/client-ca") != null)
        and (.volumes[] | select(.name == "client-ca") | .secret.secretName == "webhook-client-ca"))
      and (.[] | select(.kind == "Service" and .metadata.name == "access-token-verifier") | .spec.clusterIP == "10.0.0.200")' \
    "$work/webhook.json" >/dev/null; then
  pass "verifier.clientCA.secretName and verifier.service.clusterIP reach the Deployment and Service"
else fail "verifier.clientCA.secretName or verifier.service.clusterIP"; fi

# 4. The dashboard ConfigMap.
if cmp -s deploy/grafana/access-token-operator.json "$chart/files/grafana-dashboard.json"; then
  pass "the chart's dashboard is deploy/grafana's"
else fail "$chart/files/grafana-dashboard.json differs from deploy/grafana/access-token-operator.json (copy it)"; fi
"$helm" template "${release[@]}" --show-only templates/grafana-dashboard.yaml \
  --set grafanaDashboard.enabled=true --set grafanaDashboard.annotations.grafana_folder=Platform >"$work/dashboard.yaml"
if as_json "$work/dashboard.yaml" | jq -e --slurpfile want deploy/grafana/access-token-operator.json '.[0]
    | .metadata.labels.grafana_dashboard == "1" and .metadata.annotations.grafana_folder == "Platform"
      and (.data["access-token-operator.json"] | fromjson) == $want[0]' >/dev/null \
  && kubectl apply --dry-run=server -f "$work/dashboard.yaml" >"$work/dashboard.log" 2>&1; then
  pass "grafanaDashboard.enabled renders the dashboard ConfigMap with the sidecar label"
else fail "the dashboard ConfigMap"; cat "$work/dashboard.log" >&2 2>/dev/null || true; fi

# 5. honorLabels in both ServiceMonitors (the prometheus-operator CRDs are not installed here,
# so kubectl cannot parse these kinds: read the renders as text).
"$helm" template "${release[@]}" --show-only templates/monitoring.yaml \
  --set serviceMonitor.enabled=true --set serviceMonitor.labels.release=kube-prometheus-stack \
  --set prometheusRule.enabled=true --set prometheusRule.labels.release=kube-prometheus-stack >"$work/monitoring.yaml"
if grep -qx '      honorLabels: true' "$work/monitoring.yaml" \
  && [ "$(grep -cx '    release: kube-prometheus-stack' "$work/monitoring.yaml")" = 2 ] \
  && grep -qx '      honorLabels: true' overlays/monitoring/service-monitor.yaml; then
  pass "ServiceMonitors keep the series' namespace label (honorLabels), labels reach both objects"
else fail "ServiceMonitor honorLabels or labels"; fi

# 6. helm test's objects.
"$helm" template "${release[@]}" --show-only templates/tests/api-access.yaml >"$work/test.yaml"
if [ "$(as_json "$work/test.yaml" | jq '[.[] | select(.metadata.annotations["helm.sh/hook"] == "test")] | length')" = 4 ] \
  && kubectl apply --dry-run=server -f "$work/test.yaml" >"$work/test.log" 2>&1; then
  pass "helm test: its ServiceAccount, Role, RoleBinding and Pod are hooks and are admitted (restricted)"
else fail "helm test objects"; cat "$work/test.log" >&2 2>/dev/null || true; fi

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
