#!/usr/bin/env bash
# Writes a kubeconfig for the current context's cluster that acts as the operator's
# ServiceAccount (a TokenRequest token, as the kubelet would mount in its pod), for running the
# operator from source against an existing cluster (docs/installation/from-source.md). The
# shipped admission policies let only that ServiceAccount write TechnicalUsers and the group
# index, even cluster admins are refused: an operator run with your own identity issues nothing.
#
#   hack/operator-kubeconfig.sh OUT [DURATION]
#
# Needs deploy/rbac.yaml applied and `create` on serviceaccounts/token in access-token-operator.
# DURATION is the token's lifetime (default 24h; the cluster may cap it).
set -euo pipefail

out=${1:?usage: $0 OUT [DURATION]}
duration=${2:-24h}
namespace=access-token-operator
account=access-token-operator

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca_data=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
tls_server_name=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.tls-server-name}')
token=$(kubectl create token "$account" -n "$namespace" --duration="$duration")

# Only the cluster is copied: a client certificate left beside the token would authenticate
# first, and the operator would act as you again.
umask 077
{
  echo "apiVersion: v1"
  echo "kind: Config"
  echo "clusters:"
  echo "- name: cluster"
  echo "  cluster:"
  echo "    server: $server"
  [ -z "$ca_data" ] || echo "    certificate-authority-data: $ca_data"
  [ -z "$tls_server_name" ] || echo "    tls-server-name: $tls_server_name"
  echo "users:"
  echo "- name: $account"
  echo "  user: {token: $token}"
  echo "contexts:"
  echo "- name: $account"
  echo "  context: {cluster: cluster, user: $account, namespace: $namespace}"
  echo "current-context: $account"
} >"$out"
echo "wrote $out: system:serviceaccount:$namespace:$account, token valid for $duration" >&2
