#!/usr/bin/env bash
# A current Docker Engine for the tests, beside the system's docker.io (20.10): Docker Engine 28.5 and
# Docker Compose v2 from Debian's unstable suite, containerd 1.7 from testing, unpacked into a private
# directory (their binaries need at most GLIBC_2.34; bookworm has 2.36) and run with bookworm's own runc.
# Nothing is installed: the system's apt sources and packages are left as they are (a private apt
# configuration reads unstable and testing; adding those suites to the system would pull a new libc).
#
#   sudo bash test/install-engines.sh [dir]     (default /var/lib/ovsnet-engines)
#
# Afterwards: <dir>/docker-28.5/usr/sbin/dockerd (run with <dir>/docker-28.5/usr/bin first in PATH) and
# <dir>/cli-plugins/docker-compose (set DOCKER_CONFIG to <dir> for `docker compose`).
set -euo pipefail
dir=${1:-/var/lib/ovsnet-engines}
DOCKER=28.5.2+dfsg4-5
CONTAINERD=1.7.24~ds1-6+deb13u1
COMPOSE=2.40.3-3
engine=$dir/docker-28.5

if [ -x "$engine/usr/sbin/dockerd" ] && [ -x "$dir/cli-plugins/docker-compose" ] && [ "$(cat "$dir/versions" 2>/dev/null)" = "$DOCKER $CONTAINERD $COMPOSE" ]; then
  echo "== Docker Engine $DOCKER and Compose $COMPOSE are in $dir"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v runc >/dev/null || { echo "runc is missing (it comes with bookworm's docker.io): run plugin/setup-host.sh first" >&2; exit 1; }

mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
apt=$dir/apt
rm -rf "$apt" && mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
for suite in sid trixie; do
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
done > "$apt/sources.list"
A=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$apt/lists"
   -o "Dir::Cache=$apt/cache" -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
echo "== reading Debian's unstable and testing suites (private apt configuration)"
apt-get "${A[@]}" update -qq
echo "== downloading docker.io $DOCKER, containerd $CONTAINERD, docker-compose $COMPOSE"
(cd "$apt/debs" && apt-get "${A[@]}" download -qq "docker.io=$DOCKER" "containerd=$CONTAINERD" "docker-compose=$COMPOSE" 2>&1 | grep -v 'unsandboxed' || true)

rm -rf "$engine" "$dir/cli-plugins" && mkdir -p "$engine" "$dir/cli-plugins"
for deb in "$apt"/debs/docker.io_*.deb "$apt"/debs/containerd_*.deb; do dpkg-deb -x "$deb" "$engine"; done
compose=$(mktemp -d)
dpkg-deb -x "$apt"/debs/docker-compose_*.deb "$compose"
install -m 0755 "$compose/usr/libexec/docker/cli-plugins/docker-compose" "$dir/cli-plugins/docker-compose"
rm -rf "$compose" "$apt"
"$engine/usr/sbin/dockerd" --version
"$dir/cli-plugins/docker-compose" version
echo "$DOCKER $CONTAINERD $COMPOSE" > "$dir/versions"
echo "== unpacked into $dir"
