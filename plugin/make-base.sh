#!/usr/bin/env bash
# Makes a base image for the plugin's Dockerfile where no registry can be reached: a minimal Debian
# (debootstrap, from the Debian archive) with this host's Node.js and npm in /usr/local.
#
#   sudo bash plugin/make-base.sh [image]      (default local/ovsnet-base:bookworm)
set -euo pipefail
image=${1:-local/ovsnet-base:bookworm}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
if docker image inspect "$image" >/dev/null 2>&1; then echo "$image exists"; exit 0; fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
node_bin=$(command -v node)
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
[ -f "$npm_dir/bin/npm-cli.js" ] || { echo "cannot find npm next to $node_bin" >&2; exit 1; }
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/ovsnet-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "== debootstrap bookworm from $mirror (a minute or two)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >/dev/null
echo "== adding node $($node_bin --version) and npm"
install -D -m 0755 "$node_bin" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
# The base trusts what this host trusts (a proxy's CA, say), so that npm and apt in the build work as here.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
if [ -d /usr/local/share/ca-certificates ]; then cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"; fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  - "$image" >/dev/null
echo "== made $image"
