#!/usr/bin/env bash
# docs/installation/from-source.md, run as written against the local control plane (under
# hack/local-cluster.sh: `make test-docs`). Its first sh block installs what ships and starts
# the operator as its ServiceAccount (the last line runs it in the foreground; here in the
# background); its second applies the examples and waits for the token. Passes when the token
# turns Active and its Secret names the token's user. Run with the admin's own kubeconfig
# instead, the operator would issue nothing: the admission policies admit TechnicalUser writes
# from the operator's ServiceAccount only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

page=docs/installation/from-source.md
work="$(mktemp -d)"
operator=""
cleanup() {
  [ -z "$operator" ] || { kill -TERM "$operator" 2>/dev/null; wait "$operator" 2>/dev/null || true; }
  rm -rf "$work" operator.kubeconfig
}
trap cleanup EXIT

# The page's sh blocks, one file each.
awk -v dir="$work" '/^```sh$/ {n++; out = dir "/block" n ".sh"; next} /^```$/ {out = ""; next} out {print > out}' "$page"
[ -f "$work/block1.sh" ] && [ -f "$work/block2.sh" ] || { echo "FAIL: $page has fewer than two sh blocks" >&2; exit 1; }
start='KUBECONFIG=operator.kubeconfig target/debug/access-token-operator run'
[ "$(tail -n 1 "$work/block1.sh")" = "$start" ] || { echo "FAIL: $page's first block does not end with: $start" >&2; exit 1; }

{ head -n -1 "$work/block1.sh"; echo "$start >$work/operator.log 2>&1 &"; echo 'operator=$!'; } >"$work/install.sh"
# shellcheck disable=SC1091
source "$work/install.sh"

if out="$(bash -euo pipefail "$work/block2.sh" 2>&1)" && [ "$(tail -n 1 <<<"$out")" = "accesstoken:acme-ci:ci-deployer" ]; then
  echo "ok: $page issues a token as written"
else
  echo "FAIL: $page did not issue a token:" >&2
  echo "$out" >&2
  tail -n 20 "$work/operator.log" >&2
  exit 1
fi
