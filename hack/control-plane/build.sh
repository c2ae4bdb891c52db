#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd at the pinned versions from the
# Go module proxy, into a cache outside the repository, and prints the cache directory.
# Binaries already in the cache are reused; nothing is rebuilt unless missing.
#
#   hack/control-plane/build.sh [--with-node]
#
# --with-node also builds kubelet and kube-scheduler (into the same directory) and what
# hack/node/build.sh builds (containerd, the pause image), for hack/local-cluster.sh --with-node.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
with_node=""
case "${1:-}" in
  --with-node) with_node=1 ;;
  "") ;;
  *) echo "usage: $0 [--with-node]" >&2; exit 2 ;;
esac
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${ATO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/access-token-operator}"
bin_dir="$cache_root/control-plane/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$bin_dir"

export CGO_ENABLED=0 GOFLAGS=-mod=mod
# Keep the version strings honest, as upstream's build does.
k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"

build() { # name module-dir package ldflags
  local name=$1 dir=$2 pkg=$3 ldflags=$4
  [ -x "$bin_dir/$name" ] && return 0
  echo "building $name ($pkg) into $bin_dir ..." >&2
  local start=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$name.tmp" "$pkg")
  mv "$bin_dir/$name.tmp" "$bin_dir/$name" # atomic: a half-built binary is never cached
  echo "built $name in $((SECONDS - start))s" >&2
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
# kubectl of the same release: the machine's own may be missing or too old for this apiserver.
build kubectl kubernetes k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
if [ -n "$with_node" ]; then
  build kubelet kubernetes k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags"
  build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
  "$here/../node/build.sh" >/dev/null
fi

echo "$bin_dir"
