#!/usr/bin/env bash
# Builds the `shoal/shoal:local` image from binaries built on this machine: FROM scratch, the
# three binaries, and exactly the shared libraries they link (found with ldd). No registry is
# involved. Usage: deploy/image/build.sh [debug|release]   (default: release)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-release}
if [[ $profile == release ]]; then
    cargo build --release --locked -p shoal-manager -p shoal-agent -p shoal-cli
else
    cargo build --locked -p shoal-manager -p shoal-agent -p shoal-cli
fi
bin=target/$profile
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/tmp"
for b in shoal-manager shoal-agent shoal; do
    cp "$bin/$b" "$ctx/bin/"
    # Every library the binary needs, at the same path inside the image.
    ldd "$bin/$b" | awk '/=> \//{print $3} $1 ~ /^\//{print $1}' | while read -r lib; do
        mkdir -p "$ctx$(dirname "$lib")"
        cp -L "$lib" "$ctx$lib"
    done
done
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENV PATH=/bin
ENTRYPOINT []
DOCKERFILE
docker build -q -t shoal/shoal:local "$ctx" >/dev/null 2>"$ctx/build.log" || { cat "$ctx/build.log" >&2; exit 1; }
echo "built shoal/shoal:local ($profile binaries)"
