#!/usr/bin/env bash
# Builds the ipenrich container image without a Docker daemon, checks it, prints its size.
#
#   bash scripts/image.sh
#
# 1. builds the release binary on this machine (cargo build --release);
# 2. stages a root filesystem: the stripped binary, exactly the shared libraries `ldd`
#    says it loads, the CA certificates, /etc/passwd with the non-root user 65532 and
#    the demo database (labelled demo: a few ranges, not for production);
# 3. builds the image FROM scratch with buildah (vfs storage, chroot isolation: no
#    daemon, no registry, no base image to pull);
# 4. runs `ipenrich --version` and `ipenrich check` on the Helm chart's default config
#    inside the image, as the image's non-root user;
# 5. prints the image's size and writes an OCI archive (target/image/*.oci.tar) that
#    `skopeo copy` or `podman load` take (README "Deploy on Kubernetes").
#
# IMAGE=registry/name:tag overrides the name (default ghcr.io/ipenrich/ipenrich:<version>,
# the chart's default image and tag).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'image.sh: %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
chart_version=$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' helm/ipenrich/Chart.yaml)
if [ "$version" != "$chart_version" ]; then
  say "Cargo.toml version $version differs from the chart's appVersion $chart_version"
  exit 1
fi
image=${IMAGE:-ghcr.io/ipenrich/ipenrich:$version}
store=(--storage-driver vfs)

if ! command -v buildah >/dev/null 2>&1 || [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then
  say "installing buildah and ca-certificates"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah ca-certificates >/dev/null
  else
    sudo apt-get install -y buildah ca-certificates
  fi
fi

say "building the release binary"
cargo build --release --locked --quiet
bin=target/release/ipenrich

ctx=target/image/context
rootfs=$ctx/rootfs
rm -rf "$ctx"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/usr/share/ipenrich" "$rootfs/tmp"
strip --strip-all -o "$rootfs/usr/local/bin/ipenrich" "$bin"
chmod 0755 "$rootfs/usr/local/bin/ipenrich"

# Exactly what the dynamic loader maps: `name => /path (addr)` lines and the loader itself.
if ldd "$bin" | grep -q 'not found'; then
  say "the binary needs libraries this machine lacks:"; ldd "$bin" >&2; exit 1
fi
ldd "$bin" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
  cp -L --parents "$lib" "$rootfs/"
done
say "libraries: $(ldd "$bin" | awk '/=> \//{print $1}' | tr '\n' ' ')"

cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
cp samples/demo-asn.mmdb "$rootfs/usr/share/ipenrich/demo-asn.mmdb"
printf 'demo-asn.mmdb is a DEMO database: a few ASN ranges for trying ipenrich out.\nUse a real database in production (README "Deploy on Kubernetes", MMDB options).\n' \
  >"$rootfs/usr/share/ipenrich/README.demo"
chmod 1777 "$rootfs/tmp"
cp Containerfile "$ctx/Containerfile"

say "building $image"
buildah "${store[@]}" bud --isolation chroot --quiet --layers=false \
  --build-arg "VERSION=$version" -f "$ctx/Containerfile" -t "$image" "$ctx" >/dev/null

# The chart's default config, as the ConfigMap holds it.
helm=$(bash scripts/helm.sh)
config=target/image/default-config.yaml
"$helm" template ipenrich helm/ipenrich --show-only templates/configmap.yaml |
  awk '/^  config.yaml: \|/{on=1; next} on && /^    /{print substr($0, 5); next} on && !/^$/{on=0}' >"$config"
[ -s "$config" ] || { say "could not extract the chart's default config"; exit 1; }

ctr=$(buildah "${store[@]}" from --quiet "$image")
trap 'buildah "${store[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
run() { buildah "${store[@]}" run --isolation chroot "$@"; }
say "inside: $(run "$ctr" -- /usr/local/bin/ipenrich --version)"
user=$(buildah "${store[@]}" inspect --format '{{.OCIv1.Config.User}}' "$image")
[ "$user" = "65532:65532" ] || { say "the image runs as '$user', not 65532"; exit 1; }
say "inside, as $user: ipenrich check on the chart's default config"
run --env KAFKA_BROKERS=127.0.0.1:9 -v "$PWD/$config:/etc/ipenrich/config.yaml:ro" "$ctr" -- \
  /usr/local/bin/ipenrich check --config /etc/ipenrich/config.yaml >&2

archive=target/image/ipenrich-$version.oci.tar
rm -f "$archive"
buildah "${store[@]}" push --quiet "$image" "oci-archive:$archive:$image" >/dev/null
bytes=$(du -sb "$rootfs" | cut -f1)
say "image $image: $(buildah "${store[@]}" images --format '{{.Size}}' "$image") ($bytes bytes unpacked; goal <= 40 MB); archive $archive"
