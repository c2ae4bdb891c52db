#!/usr/bin/env bash
# `make test-image`: smoke test of the image that `make image` wrote, run under
# hack/local-cluster.sh (KUBECONFIG: a throw-away control plane). Fails loudly unless
#   - the archive's index names the image localhost/access-token-operator:<Cargo version> for
#     containerd and podman, it holds one layer with nothing but the binary, and its config
#     runs the binary as 65532:65532 and carries the OCI labels;
#   - `--help` runs in a container (podman with runc, read-only root, no capabilities, UID 65532);
#   - `run` in a container (host network, the operator's ServiceAccount kubeconfig mounted
#     read-only) runs as 65532 with no capabilities, answers /healthz and /readyz with 200,
#     issues an AccessToken, serves /metrics with it, never shows the token's secret in
#     metrics or logs, and exits 0 on SIGTERM.
# Podman's storage lives in a temporary directory removed at exit, failure or not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

fail() {
  echo "image smoke test FAILED: $*" >&2
  exit 1
}
[ -n "${KUBECONFIG:-}" ] || fail "KUBECONFIG is not set: run me under hack/local-cluster.sh (make test-image)"
hack/ensure-packages.sh podman runc skopeo jq curl
# shellcheck source=hack/image/common.sh
. hack/image/common.sh
[ -f "$image_archive" ] || fail "$image_archive is missing: run make image"

work="$(mktemp -d "${TMPDIR:-/tmp}/ato-image-smoke.XXXXXX")"
export TMPDIR="$work/tmp"
mkdir "$TMPDIR"
container="ato-image-smoke-$$"
# The VM's runtimes cannot raise rlimits and crun does not run on cgroup v1 hybrid: runc with
# lower limits (see the containers note). No systemd, no events journal.
cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
CONF
export CONTAINERS_CONF="$work/containers.conf"
podman() {
  command podman --root "$work/root" --runroot "$work/runroot" --tmpdir "$work/libpod" \
    --storage-driver vfs "$@"
}
cleanup() {
  local status=$?
  if [ "$status" -ne 0 ] && podman container exists "$container" 2>/dev/null; then
    echo "--- log of the operator container" >&2
    podman logs "$container" >&2 || true
  fi
  podman rm --force --time 5 "$container" >/dev/null 2>&1 || true
  # Anything podman left mounted under its state (shm, volumes), deepest first.
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "image: archive and config" >&2
index="$(tar -xOf "$image_archive" index.json)"
for annotation in org.opencontainers.image.ref.name io.containerd.image.name; do
  name="$(jq -r --arg a "$annotation" '.manifests[0].annotations[$a] // empty' <<<"$index")"
  [ "$name" = "$image_ref" ] || fail "index annotation $annotation is '$name', want '$image_ref'"
done
manifest="$(skopeo inspect --raw "oci-archive:$image_archive")"
[ "$(jq '.layers | length' <<<"$manifest")" = 1 ] || fail "want exactly one layer: $manifest"
layer="blobs/$(jq -r '.layers[0].digest | sub(":"; "/")' <<<"$manifest")"
files="$(tar -xOf "$image_archive" "$layer" | tar -tz)"
[ "$files" = access-token-operator ] || fail "the layer should hold only the binary, holds: $files"
config="$(skopeo inspect --config "oci-archive:$image_archive")"
user="$(jq -r .config.User <<<"$config")"
[ "$user" = 65532:65532 ] || fail "image user is '$user', want 65532:65532"
entrypoint="$(jq -c .config.Entrypoint <<<"$config")"
[ "$entrypoint" = '["/access-token-operator"]' ] || fail "entrypoint is $entrypoint"
for label in title description source version revision licenses created; do
  value="$(jq -r --arg l "org.opencontainers.image.$label" '.config.Labels[$l] // empty' <<<"$config")"
  [ -n "$value" ] || fail "label org.opencontainers.image.$label is missing or empty"
done
version="$(jq -r '.config.Labels["org.opencontainers.image.version"]' <<<"$config")"
[ "$version" = "$image_version" ] || fail "version label is '$version', want '$image_version'"

echo "image: podman load, --help" >&2
podman load --quiet --input "$image_archive" >/dev/null
podman image exists "$image_ref" || fail "podman load did not name the image $image_ref"
locked_down=(--read-only --cap-drop ALL --security-opt no-new-privileges)
help="$(podman run --rm --network none "${locked_down[@]}" --user 65532:65532 "$image_ref" --help)" ||
  fail "--help failed in the container"
grep -q '^Usage: access-token-operator' <<<"$help" || fail "--help printed no usage: $help"
for command in run verifier crd atk; do
  grep -qE "^  $command " <<<"$help" || fail "--help does not list the command $command: $help"
done

echo "image: the operator running in a container" >&2
kubectl apply --server-side -f crds/access-token-operator.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s -f crds/access-token-operator.yaml >/dev/null
kubectl apply --server-side -f deploy/rbac.yaml >/dev/null
# The operator's ServiceAccount, as a kubelet would mount it; readable by UID 65532 only.
kubeconfig="$work/kubeconfig"
kubectl config view --raw --minify >"$kubeconfig"
KUBECONFIG="$kubeconfig" kubectl config set-credentials "$(kubectl config view --minify -o jsonpath='{.users[0].name}')" \
  --token="$(kubectl create token access-token-operator -n access-token-operator --duration=1h)" >/dev/null
chown 65532:65532 "$kubeconfig"
chmod 0400 "$kubeconfig"
podman run --detach --name "$container" --network host "${locked_down[@]}" \
  --volume "$kubeconfig:/var/run/access-token-operator/kubeconfig:ro" \
  --env KUBECONFIG=/var/run/access-token-operator/kubeconfig \
  "$image_ref" run --log-format json --probe-bind 127.0.0.1:0 >/dev/null

# wait_until WHAT SECONDS COMMAND...: polls COMMAND until it succeeds; fails after SECONDS
# or as soon as the container has stopped.
wait_until() {
  local what="$1" deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    [ "$(podman inspect --format '{{.State.Running}}' "$container")" = true ] ||
      fail "the operator container stopped while waiting for: $what"
    [ "$SECONDS" -lt "$deadline" ] || fail "not within the deadline: $what"
    sleep 0.2
  done
}
# port 0: the operator picks a free loopback port and logs it
probe_address() {
  address="$(podman logs "$container" 2>&1 |
    jq -Rr 'fromjson? | select((.message // "") | startswith("probes and metrics listening")) | .address' | head -n1)"
  [ -n "$address" ]
}
http_200() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$address$1")" = 200 ]; }
wait_until "the probe address in the log" 60 probe_address
wait_until "/healthz answers 200" 60 http_200 /healthz
wait_until "/readyz answers 200" 60 http_200 /readyz

pid="$(podman inspect --format '{{.State.Pid}}' "$container")"
ids="$(awk '/^(Uid|Gid):/ {print $2, $3, $4, $5}' "/proc/$pid/status" | sort -u)"
[ "$ids" = "65532 65532 65532 65532" ] || fail "the operator runs as uid/gid '$ids', want 65532"
caps="$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")"
[ "$caps" = 0000000000000000 ] || fail "the operator has capabilities $caps"

kubectl create namespace acme-ci >/dev/null
kubectl apply -f examples/10-organization.yaml >/dev/null
kubectl apply -f - >/dev/null <<TOKEN
apiVersion: iam.accesstoken.io/v1alpha1
kind: AccessToken
metadata: {name: image-smoke, namespace: acme-ci}
spec: {organization: acme}
TOKEN
kubectl wait --for=jsonpath='{.status.phase}'=Active --timeout=60s -n acme-ci accesstoken/image-smoke >/dev/null ||
  fail "the operator in the container did not issue the AccessToken"
metrics_show_token() {
  metrics="$(curl -fsS --max-time 5 "http://$address/metrics")" &&
    grep -q '^access_token_operator_token_phase{.*name="image-smoke".*phase="Active".*} 1$' <<<"$metrics"
}
wait_until "/metrics shows the AccessToken Active" 30 metrics_show_token
secret="$(kubectl get secret -n acme-ci image-smoke -o jsonpath='{.data.token}' | base64 -d)"
secret="${secret##*_}"
[ ${#secret} -ge 16 ] || fail "the Secret holds no token"
if grep -qF -e "$secret" <<<"$metrics$(podman logs "$container" 2>&1)"; then
  fail "the token's secret appears in /metrics or the operator's log"
fi

podman stop --time 20 "$container" >/dev/null
exit_code="$(podman inspect --format '{{.State.ExitCode}}' "$container")"
[ "$exit_code" = 0 ] || fail "the operator exited $exit_code on SIGTERM"
echo "image smoke test passed: $image_ref" >&2
