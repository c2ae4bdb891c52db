#!/usr/bin/env bash
# The e2e's workload image: a static busybox (a shell for `kubectl exec`, tar for
# `kubectl cp`, httpd for `kubectl port-forward`) and the pinned static kubectl (a pod that
# mounts a token's Secret and uses its kubeconfig), built without a container daemon into
# target/image/e2e-workload.oci.tar as localhost/ato-e2e-workload:1. Prints the archive's path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

hack/ensure-packages.sh buildah busybox-static jq
ref=localhost/ato-e2e-workload:1
archive=target/image/e2e-workload.oci.tar
state="$PWD/target/image/e2e-workload-state"
rm -rf "$state"
mkdir -p "$state/context/bin" "$state/tmp"
trap 'rm -rf "$state"' EXIT
cp /bin/busybox "$state/context/bin/busybox"
cp "$(hack/control-plane/build.sh)/kubectl" "$state/context/bin/kubectl"
for applet in sh tar cat echo sleep httpd mkdir ls; do ln -s busybox "$state/context/bin/$applet"; done
printf 'FROM scratch\nCOPY bin/ /bin/\nENV PATH=/bin\n' >"$state/context/Containerfile"
export TMPDIR="$state/tmp"
buildah=(buildah --root "$state/root" --runroot "$state/runroot" --storage-driver vfs)
"${buildah[@]}" build --quiet --format oci --layers=false --iidfile "$state/image-id" \
  -f "$state/context/Containerfile" "$state/context" >&2
"${buildah[@]}" push --quiet "$(cat "$state/image-id")" "oci:$state/layout" >&2
jq --arg ref "$ref" \
  '.manifests[0].annotations += {"org.opencontainers.image.ref.name": $ref, "io.containerd.image.name": $ref}' \
  "$state/layout/index.json" >"$state/index.json"
mv "$state/index.json" "$state/layout/index.json"
mkdir -p target/image
tar -C "$state/layout" -cf "$archive.tmp" oci-layout index.json blobs
mv "$archive.tmp" "$archive"
echo "$archive"
