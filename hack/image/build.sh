#!/usr/bin/env bash
# `make image`: the operator's container image, built without a container daemon.
#
#   hack/image/build.sh        prints the path of the OCI archive it wrote
#
# 1. a static binary for x86_64-unknown-linux-musl, cargo profile `dist` (Cargo.toml);
# 2. hack/image/Containerfile (FROM scratch, USER 65532:65532, OCI labels from Cargo.toml
#    and git) built by buildah into a throw-away storage under target/image/, never the
#    machine's own container storage;
# 3. an OCI archive, target/image/access-token-operator.oci.tar, whose index names the image
#    localhost/access-token-operator:<Cargo version> for containerd (`ctr images import`,
#    annotation io.containerd.image.name) and for podman/skopeo (org.opencontainers.image.ref.name).
#
# Labels: source is $IMAGE_SOURCE, else Cargo.toml's `repository`, else the git remote
# `origin`; created is $SOURCE_DATE_EPOCH, else the commit time of HEAD (so the same commit
# gives the same image config); revision is HEAD, with `-dirty` for uncommitted changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

target=x86_64-unknown-linux-musl
hack/ensure-packages.sh buildah skopeo musl-tools jq binutils
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2

# shellcheck source=hack/image/common.sh
. hack/image/common.sh

# ring compiles C: musl's compiler wrapper builds it against musl, not glibc (the cc crate
# picks musl-gcc for this target anyway; explicit, and overridable).
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
cargo build --locked --profile dist --target "$target" --bin access-token-operator >&2
binary="target/$target/dist/access-token-operator"
# static: no program interpreter, no shared library needed
elf="$(readelf -lW -dW "$binary")"
if grep -qE 'INTERP|\(NEEDED\)' <<<"$elf"; then
  echo "$binary is not statically linked:" >&2
  grep -E 'interpreter|\(NEEDED\)' <<<"$elf" >&2
  exit 1
fi

source_url="${IMAGE_SOURCE:-$(jq -r '.repository // empty' <<<"$package_json")}"
if [ -z "$source_url" ] && origin="$(git remote get-url origin 2>/dev/null)"; then
  # https form, without any user or password a remote URL may carry
  source_url="$(sed -E 's#^git@([^:]+):#https://\1/#; s#^(https?://)[^/@]*@#\1#; s#\.git$##' <<<"$origin")"
fi
if [ -z "$source_url" ]; then
  echo "warning: no IMAGE_SOURCE, Cargo.toml repository or git remote origin: label source is \"unknown\"" >&2
  source_url=unknown
fi
revision="$(git rev-parse HEAD)"
[ -z "$(git status --porcelain --untracked-files=no)" ] || revision="$revision-dirty"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"

state="$PWD/target/image/build-state"
rm -rf "$state"
mkdir -p "$state/context" "$state/tmp"
trap 'rm -rf "$state"' EXIT
cp "$binary" "$state/context/access-token-operator"
export TMPDIR="$state/tmp"
buildah=(buildah --root "$state/root" --runroot "$state/runroot" --storage-driver vfs)

"${buildah[@]}" build --quiet --format oci --layers=false --timestamp "$epoch" \
  --iidfile "$state/image-id" \
  --build-arg TITLE="$(jq -r .name <<<"$package_json")" \
  --build-arg DESCRIPTION="$(jq -r .description <<<"$package_json")" \
  --build-arg SOURCE="$source_url" \
  --build-arg VERSION="$image_version" \
  --build-arg REVISION="$revision" \
  --build-arg LICENSES="$(jq -r .license <<<"$package_json")" \
  --build-arg CREATED="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" \
  -f hack/image/Containerfile "$state/context" >&2
"${buildah[@]}" push --quiet "$(cat "$state/image-id")" "oci:$state/layout" >&2

# One manifest; name it for every consumer (see the header).
jq --arg ref "$image_ref" \
  '.manifests[0].annotations += {"org.opencontainers.image.ref.name": $ref, "io.containerd.image.name": $ref}' \
  "$state/layout/index.json" >"$state/index.json"
mv "$state/index.json" "$state/layout/index.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$state/layout" -cf "$image_archive.tmp" oci-layout index.json blobs
mv "$image_archive.tmp" "$image_archive"
echo "$image_archive"
