#!/usr/bin/env bash
# Imports OCI image archives (as written by `skopeo copy ... oci-archive:FILE[:REF]` or
# `buildah push IMAGE oci-archive:FILE[:REF]`) into the containerd of every node of the
# running test cluster, where kubelet finds them (namespace k8s.io). Run it from a COMMAND
# under `hack/local-cluster.sh --with-node`: it finds the nodes through $ATO_CLUSTER_DIR.
# Pods should use the archive's reference (e.g. localhost/access-token-operator:0.1.0) with
# imagePullPolicy: IfNotPresent or Never: there is no registry to pull from.
#
#   hack/node/load-image.sh ARCHIVE...
#   hack/node/load-image.sh --socket CONTAINERD_SOCKET ARCHIVE...   (one node; used at start)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sockets=()
if [ "${1:-}" = "--socket" ]; then
  sockets=("$2"); shift 2
else
  : "${ATO_CLUSTER_DIR:?run this under hack/local-cluster.sh --with-node}"
  for socket in "$ATO_CLUSTER_DIR"/node/*/containerd.sock; do
    [ -S "$socket" ] && sockets+=("$socket")
  done
  [ ${#sockets[@]} -gt 0 ] || { echo "no node containerd under $ATO_CLUSTER_DIR (started without --with-node?)" >&2; exit 1; }
fi
[ $# -gt 0 ] || { echo "usage: $0 [--socket SOCKET] ARCHIVE..." >&2; exit 2; }

ctr="$("$here/build.sh" | sed -n 1p)/ctr" # cached: prints at once
for archive in "$@"; do
  [ -f "$archive" ] || { echo "no such archive: $archive" >&2; exit 1; }
  for socket in "${sockets[@]}"; do
    # --local: unpack in this process, for the snapshotter the CRI uses (overlayfs), so kubelet
    # sees the image as present.
    "$ctr" -a "$socket" -n k8s.io images import --local --snapshotter overlayfs "$archive"
  done
done
