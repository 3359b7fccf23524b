#!/usr/bin/env bash
# Builds the managed (v2) plugin: the image from the Dockerfile, its filesystem as the plugin's rootfs,
# config.json beside it, then `docker plugin create`.
#
#   sudo bash plugin/build-managed.sh [plugin name]       (default ovsnet:latest)
#   BASE=<image> ...   build on another base; without it, the official Node image when it can be pulled,
#                      else a base made locally (plugin/make-base.sh)
set -euo pipefail
name=${1:-ovsnet:latest}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
cd "$(dirname "$0")/.."
base=${BASE:-}
if [ -z "$base" ]; then
  if docker image inspect node:20-bookworm-slim >/dev/null 2>&1 || timeout 60 docker pull -q node:20-bookworm-slim >/dev/null 2>&1; then
    base=node:20-bookworm-slim
  else
    echo "== node:20-bookworm-slim cannot be pulled here; using a base made locally"
    bash plugin/make-base.sh local/ovsnet-base:bookworm
    base=local/ovsnet-base:bookworm
  fi
fi
echo "== building the image on $base"
# Host networking: apt and npm reach their mirrors the way the host does.
docker build -q --network host --build-arg "BASE=$base" -t ovsnet-plugin-rootfs:build . >/dev/null
build=plugin/build
rm -rf "$build"
mkdir -p "$build/rootfs"
id=$(docker create ovsnet-plugin-rootfs:build)
trap 'docker rm -f "$id" >/dev/null 2>&1 || true' EXIT
docker export "$id" | tar -x -C "$build/rootfs"
cp config.json "$build/"
if docker plugin inspect "$name" >/dev/null 2>&1; then docker plugin rm -f "$name" >/dev/null; fi
docker plugin create "$name" "$build" >/dev/null
echo "== created plugin $name (from $build)"
