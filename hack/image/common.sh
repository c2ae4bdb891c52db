# Sourced by hack/image/build.sh and tests/image/smoke.sh: the image's name and where its
# archive goes. Expects to run at the repository's root.
package_json="$(cargo metadata --no-deps --format-version 1 --offline |
  jq -c '.packages[] | select(.name == "access-token-operator")')"
image_version="$(jq -r .version <<<"$package_json")"
image_ref="localhost/access-token-operator:$image_version"
image_archive="target/image/access-token-operator.oci.tar"
