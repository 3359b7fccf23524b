#!/usr/bin/env bash
# What only the tests need, beside what plugin/setup-host.sh installs for the plugin and its tests:
#   chromium  Debian's, driven headless to check that `ovsnet graph`'s SVG shows every name (test/harness/browser.ts).
# Installed from the system's own apt sources (Debian stable); nothing else is changed.
#
#   sudo bash test/install-test-tools.sh
set -euo pipefail
packages=(chromium)
missing=()
# Installed means installed: a package removed but not purged still answers dpkg -s.
for p in "${packages[@]}"; do [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "== test tools are installed: ${packages[*]}"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
echo "== installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
chromium --version
