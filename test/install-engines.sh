#!/usr/bin/env bash
# The Docker Engines the tests run on, beside the system's docker.io (20.10), each in a private directory:
#   docker-28.5  Docker Engine 28.5 and its containerd 1.7 (Debian unstable's docker.io, testing's containerd),
#                with Docker Compose v2 (unstable's docker-compose);
#   docker-26.1  Debian stable's (trixie) dockerd 26.1.5, run with 28.5's containerd and bookworm's runc;
#   docker-29.7  dockerd 29.7.2 and runc 1.3.6 from ../shared/engines (built from their upstream tags; Debian
#                has no Docker 29), run with 28.5's containerd, shims, docker-init and docker-proxy.
# Their binaries need at most GLIBC_2.34 (bookworm has 2.36). Nothing is installed: the system's apt sources and
# packages are left as they are (a private apt configuration reads unstable and testing; adding those suites to
# the system would pull a new libc).
#
#   sudo bash test/install-engines.sh [dir]     (default /var/lib/ovsnet-engines; OVSNET_SHARED: ../shared)
#
# Afterwards: <dir>/docker-<version>/... (test/e2e/harness/sim-host.ts knows how each runs) and
# <dir>/cli-plugins/docker-compose (set DOCKER_CONFIG to <dir> for `docker compose`).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/var/lib/ovsnet-engines}
shared=${OVSNET_SHARED:-$(dirname "$repo")/shared}
DOCKER=28.5.2+dfsg4-5
CONTAINERD=1.7.24~ds1-6+deb13u1
COMPOSE=2.40.3-3
DOCKER26=26.1.5+dfsg1-9+deb13u1+b1
DOCKER29=29.7.2
DOCKER29_TARBALL=$shared/engines/docker-$DOCKER29-linux-amd64.tar.xz
DOCKER29_SHA256=1d4efc6d60da4a4aaa500ddb47e2502923b8d6e4180e7447a4b73c718821150a
versions="$DOCKER $CONTAINERD $COMPOSE $DOCKER26 $DOCKER29"

if [ -x "$dir/docker-28.5/usr/sbin/dockerd" ] && [ -x "$dir/docker-26.1/usr/sbin/dockerd" ] && [ -x "$dir/docker-29.7/dockerd" ] \
  && [ -x "$dir/cli-plugins/docker-compose" ] && [ "$(cat "$dir/versions" 2>/dev/null)" = "$versions" ]; then
  echo "== Docker Engines 28.5, 26.1 and 29.7 and Compose $COMPOSE are in $dir"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v runc >/dev/null || { echo "runc is missing (it comes with bookworm's docker.io): run plugin/setup-host.sh first" >&2; exit 1; }
[ -f "$DOCKER29_TARBALL" ] || { echo "$DOCKER29_TARBALL is missing: the tests need Docker 29 from ../shared/engines (set OVSNET_SHARED to the shared directory)" >&2; exit 1; }
echo "$DOCKER29_SHA256  $DOCKER29_TARBALL" | sha256sum -c --quiet - || { echo "$DOCKER29_TARBALL is not the tarball its README describes (sha256)" >&2; exit 1; }

mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
apt=$dir/apt
rm -rf "$apt" && mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$apt/debs26"
for suite in sid trixie; do
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
done > "$apt/sources.list"
A=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$apt/lists"
   -o "Dir::Cache=$apt/cache" -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
echo "== reading Debian's unstable and testing suites (private apt configuration)"
apt-get "${A[@]}" update -qq
echo "== downloading docker.io $DOCKER and $DOCKER26, containerd $CONTAINERD, docker-compose $COMPOSE"
(cd "$apt/debs" && apt-get "${A[@]}" download -qq "docker.io=$DOCKER" "containerd=$CONTAINERD" "docker-compose=$COMPOSE" 2>&1 | grep -v 'unsandboxed' || true)
(cd "$apt/debs26" && apt-get "${A[@]}" download -qq "docker.io=$DOCKER26" 2>&1 | grep -v 'unsandboxed' || true)

rm -rf "$dir/docker-28.5" "$dir/docker-26.1" "$dir/docker-29.7" "$dir/cli-plugins"
mkdir -p "$dir/docker-28.5" "$dir/docker-26.1" "$dir/docker-29.7" "$dir/cli-plugins"
for deb in "$apt"/debs/docker.io_*.deb "$apt"/debs/containerd_*.deb; do dpkg-deb -x "$deb" "$dir/docker-28.5"; done
# 26.1: its dockerd alone (its docker-proxy and docker-init too, as they belong to it); containerd is 28.5's.
unpacked=$(mktemp -d)
dpkg-deb -x "$apt"/debs26/docker.io_*.deb "$unpacked"
install -D -m 0755 "$unpacked/usr/sbin/dockerd" "$dir/docker-26.1/usr/sbin/dockerd"
for tool in docker-proxy docker-init; do
  for at in usr/sbin usr/bin usr/libexec/docker; do
    [ -x "$unpacked/$at/$tool" ] && install -D -m 0755 "$unpacked/$at/$tool" "$dir/docker-26.1/usr/sbin/$tool" && break
  done
done
rm -rf "$unpacked"
tar -C "$dir/docker-29.7" --strip-components=1 -xJf "$DOCKER29_TARBALL"
compose=$(mktemp -d)
dpkg-deb -x "$apt"/debs/docker-compose_*.deb "$compose"
install -m 0755 "$compose/usr/libexec/docker/cli-plugins/docker-compose" "$dir/cli-plugins/docker-compose"
rm -rf "$compose" "$apt"
"$dir/docker-28.5/usr/sbin/dockerd" --version
"$dir/docker-26.1/usr/sbin/dockerd" --version
"$dir/docker-29.7/dockerd" --version
"$dir/docker-29.7/runc" --version | head -1
"$dir/cli-plugins/docker-compose" version
echo "$versions" > "$dir/versions"
echo "== unpacked into $dir"
