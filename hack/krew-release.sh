#!/usr/bin/env bash
# Packages `kubectl atk` for krew and fills the manifest template for one release:
#   hack/krew-release.sh VERSION HOMEPAGE BASE_URL OUT_DIR LINUX_AMD64_BINARY
# writes OUT_DIR/kubectl-atk_VERSION_linux_amd64.tar.gz (the binary as `kubectl-atk`, with
# LICENSE when the repository has one) and OUT_DIR/atk.yaml, plugins/krew/atk.yaml with the
# version, homepage, the archive's URI (BASE_URL/<archive>) and its sha256. Upload the
# archive to BASE_URL, then submit atk.yaml to the krew index.
set -euo pipefail
if [ "$#" -ne 5 ]; then
  sed -n '2,7p' "$0" >&2
  exit 2
fi
version=$1 homepage=$2 base_url=${3%/} out=$4 binary=$5
if ! [[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
  echo "VERSION must be a semantic version with a v, e.g. v0.1.0 (krew's rule), not $version" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/kubectl-atk"
if [ -f "$root/LICENSE" ]; then
  install -m 0644 "$root/LICENSE" "$stage/LICENSE"
fi
archive="kubectl-atk_${version}_linux_amd64.tar.gz"
# Reproducible: fixed owner, order and times, no name or time in the gzip header.
tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf - . \
  | gzip -n >"$out/$archive"
sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
manifest="$root/plugins/krew/atk.yaml"
# The template's leading comment is about the template: the released manifest starts at
# apiVersion.
manifest_text=$(sed '1,/^apiVersion:/{/^#/d}' "$manifest")
if [ ! -f "$stage/LICENSE" ]; then
  # Without a LICENSE in the archive, the manifest must not ask krew to copy one.
  manifest_text=$(printf '%s\n' "$manifest_text" | sed '/- from: LICENSE/,/to: \./d')
fi
printf '%s\n' "$manifest_text" | sed \
  -e "s|@VERSION@|$version|g" \
  -e "s|@HOMEPAGE@|$homepage|g" \
  -e "s|@URI_LINUX_AMD64@|$base_url/$archive|g" \
  -e "s|@SHA256_LINUX_AMD64@|$sha|g" >"$out/atk.yaml"
echo "$out/$archive $sha" >&2
