#!/usr/bin/env bash
# Builds what the test cluster's nodes need besides kubelet and kube-scheduler, into the cache
# that hack/control-plane/build.sh uses, and prints two lines: the directory holding containerd,
# containerd-shim-runc-v2 and ctr; the pause image's OCI archive; the pause image's reference. Anything already in the cache is reused. runc, buildah and skopeo come
# from Debian (hack/ensure-packages.sh installs them when missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../control-plane/versions.env
source "$here/../control-plane/versions.env"
# The sandbox image every node's containerd uses; built from hack/node/pause.
PAUSE_IMAGE=localhost/ato-pause:1

"$here/../ensure-packages.sh" runc buildah skopeo

cache_root="${ATO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/access-token-operator}"
bin_dir="$cache_root/node/containerd-$CONTAINERD_VERSION"
mkdir -p "$bin_dir"

export CGO_ENABLED=0 GOFLAGS=-mod=mod
for name in containerd containerd-shim-runc-v2 ctr; do
  [ -x "$bin_dir/$name" ] && continue
  echo "building $name $CONTAINERD_VERSION into $bin_dir ..." >&2
  start=$SECONDS
  # The btrfs, devmapper and zfs snapshotters need cgo or host libraries; the nodes use overlayfs.
  (cd "$here/containerd" && go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    -o "$bin_dir/$name.tmp" "github.com/containerd/containerd/v2/cmd/$name")
  mv "$bin_dir/$name.tmp" "$bin_dir/$name" # atomic: a half-built binary is never cached
  echo "built $name in $((SECONDS - start))s" >&2
done

# The pause image, cached by the hash of its sources: a static Go binary FROM scratch, written
# as an OCI archive by buildah from a throw-away storage (no global container storage is left).
hash="$(cat "$here/pause/go.mod" "$here/pause/main.go" <(echo "$PAUSE_IMAGE") | sha256sum | cut -c1-16)"
archive="$cache_root/node/pause-$hash.oci.tar"
if [ ! -f "$archive" ]; then
  echo "building the pause image $PAUSE_IMAGE into $archive ..." >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$here/pause" && go build -trimpath -ldflags "-s -w" -o "$tmp/pause" .)
  buildah=(buildah --root "$tmp/root" --runroot "$tmp/run" --storage-driver vfs)
  container="$("${buildah[@]}" from scratch)"
  "${buildah[@]}" copy "$container" "$tmp/pause" /pause >/dev/null
  "${buildah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$container"
  "${buildah[@]}" commit -q --rm "$container" "$PAUSE_IMAGE" >/dev/null
  "${buildah[@]}" push -q "$PAUSE_IMAGE" "oci-archive:$tmp/pause.oci.tar:$PAUSE_IMAGE"
  "${buildah[@]}" rmi -a -f >/dev/null
  mv "$tmp/pause.oci.tar" "$archive"
fi

echo "$bin_dir"
echo "$archive"
echo "$PAUSE_IMAGE"
