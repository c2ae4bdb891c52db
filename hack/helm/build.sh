#!/usr/bin/env bash
# Builds helm at the pinned version (versions.env, go.mod) from the Go module proxy, into a
# cache outside the repository, and prints the binary's path. A cached binary is reused;
# nothing is rebuilt unless missing. Same cache root as hack/control-plane/build.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${ATO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/access-token-operator}"
bin_dir="$cache_root/helm/helm-$HELM_VERSION"
bin="$bin_dir/helm"

if [ ! -x "$bin" ]; then
  mkdir -p "$bin_dir"
  echo "building helm $HELM_VERSION into $bin_dir ..." >&2
  start=$SECONDS
  # -mod=readonly: go.sum must already hold every module (no resolution at build time).
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    -o "$bin.tmp" helm.sh/helm/v4/cmd/helm)
  mv "$bin.tmp" "$bin" # atomic: a half-built binary is never cached
  echo "built helm in $((SECONDS - start))s" >&2
fi

# The version go.mod pins must be the one versions.env names (and the cache directory says).
got="$("$bin" version --template '{{.Version}}')"
[ "$got" = "$HELM_VERSION" ] || { echo "helm: built $got, versions.env pins $HELM_VERSION" >&2; exit 1; }

echo "$bin"
