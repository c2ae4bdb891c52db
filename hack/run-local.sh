#!/usr/bin/env bash
# The body of `make run`, called by hack/local-cluster.sh with KUBECONFIG set: installs the
# CRDs, starts the operator and the authenticating proxy, applies examples/, and waits for
# Ctrl-C. The example tokens' Secrets carry a kubeconfig pointing at the proxy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

kubectl apply --server-side -f crds/access-token-operator.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s -f crds/access-token-operator.yaml >/dev/null
# What ships besides the Deployment: the operator's RBAC, the admission policies, tenant roles.
kubectl apply --server-side -f deploy/rbac.yaml -f deploy/admission-policies.yaml \
  -f deploy/tenant-roles.yaml -f overlays/proxy/proxy-rbac.yaml >/dev/null
kubectl create serviceaccount access-token-proxy -n access-token-operator \
  --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null

# The operator runs as its ServiceAccount (a TokenRequest token, as a kubelet would mount
# it), never as a cluster admin: what runs here is what ships.
operator_kubeconfig="$ATO_CLUSTER_DIR/operator.kubeconfig"
kubectl config view --raw --minify >"$operator_kubeconfig"
KUBECONFIG="$operator_kubeconfig" kubectl config set-credentials admin \
  --token="$(kubectl create token access-token-operator -n access-token-operator --duration=24h)" >/dev/null
chmod 600 "$operator_kubeconfig"

# The proxy, as its own ServiceAccount (its shipped RBAC: it may impersonate only the shards
# the operator keeps), on a free loopback port with a certificate of the local CA.
proxy_kubeconfig="$ATO_CLUSTER_DIR/proxy.kubeconfig"
kubectl config view --raw --minify >"$proxy_kubeconfig"
KUBECONFIG="$proxy_kubeconfig" kubectl config set-credentials admin \
  --token="$(kubectl create token access-token-proxy -n access-token-operator --duration=24h)" >/dev/null
chmod 600 "$proxy_kubeconfig"
proxy_port=9443
while (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null; do proxy_port=$((proxy_port + 1)); done

KUBECONFIG="$operator_kubeconfig" target/debug/access-token-operator run \
  --verifier-bind "127.0.0.1:$ATO_VERIFIER_PORT" \
  --tls-cert-file "$ATO_VERIFIER_CERT" --tls-key-file "$ATO_VERIFIER_KEY" \
  --client-ca-file "$ATO_VERIFIER_CLIENT_CA" \
  --impersonation-role-shards 16 \
  --kubeconfig-server "https://127.0.0.1:$proxy_port" --kubeconfig-ca-file "$ATO_CLUSTER_CA" &
operator=$!
KUBECONFIG="$proxy_kubeconfig" target/debug/access-token-operator proxy \
  --proxy-bind "127.0.0.1:$proxy_port" --probe-bind 127.0.0.1:0 \
  --tls-cert-file "$ATO_VERIFIER_CERT" --tls-key-file "$ATO_VERIFIER_KEY" &
proxy=$!
trap 'kill -TERM $operator $proxy 2>/dev/null; wait $operator $proxy' EXIT INT TERM

# Scopes first: a group token is issued only if it is newer than its Group (a later second;
# docs/concepts/lifecycle.md, "A group token older than its Group").
kubectl apply -f examples/00-namespaces.yaml -f examples/10-organization.yaml \
  -f examples/15-scope-admins.yaml -f examples/20-group.yaml >/dev/null
group_created=$(kubectl get group acme-platform -o jsonpath='{.metadata.creationTimestamp}')
until [[ "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$group_created" ]]; do sleep 0.2; done
kubectl apply -f examples/ >/dev/null
kubectl wait --for=jsonpath='{.status.phase}'=Active --timeout=60s -n acme-ci accesstoken/ci-deployer >/dev/null || true
cat >&2 <<MSG

  The operator is running against a local control plane with the examples applied.
  In another terminal:

    export KUBECONFIG=$PWD/target/local-cluster/kubeconfig
    kubectl get accesstokens -A
    kubectl get secret -n acme-ci ci-deployer -o jsonpath='{.data.token}' | base64 -d
    kubectl auth whoami --token "\$(kubectl get secret -n acme-ci ci-deployer -o jsonpath='{.data.token}' | base64 -d)"

  Through the authenticating proxy (https://127.0.0.1:$proxy_port), with the kubeconfig from the Secret:

    kubectl get secret -n acme-ci ci-deployer -o jsonpath='{.data.kubeconfig}' | base64 -d >ci-deployer.kubeconfig
    kubectl --kubeconfig ci-deployer.kubeconfig auth whoami

  Ctrl-C stops the operator and the control plane.

MSG
wait -n $operator $proxy
