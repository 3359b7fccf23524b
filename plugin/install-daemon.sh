#!/usr/bin/env bash
# Installs ovsnet as a plain daemon: the build in /opt/ovsnet, the CLI as /usr/local/bin/ovsnet, the systemd
# unit (started before docker.service), and /etc/default/ovsnet for settings (kept if it exists).
#
#   sudo bash plugin/install-daemon.sh            install (or upgrade) and start
#   sudo bash plugin/install-daemon.sh --remove   stop and remove the program; keeps /var/lib/ovsnet (the
#                                                 state) and /etc/default/ovsnet (the settings)
#   DESTDIR=/tmp/root ...                          install into another root (no systemctl calls)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${DESTDIR:-}
remove=0
[ "${1:-}" = "--remove" ] && remove=1
live() { [ -z "$dest" ] && [ -d /run/systemd/system ]; }
# Builds before December 2026 had docker.service require the plugin (RequiredBy): its link would still make
# a stop or restart of the plugin stop or restart dockerd and every container. It goes before any of those.
forget_requires() {
  rm -f "$dest/etc/systemd/system/docker.service.requires/ovsnet.service"
  rmdir "$dest/etc/systemd/system/docker.service.requires" 2>/dev/null || true
  if live; then systemctl daemon-reload; fi
}

if [ "$remove" = 1 ]; then
  forget_requires
  if live; then systemctl disable --now ovsnet.service 2>/dev/null || true; fi
  rm -rf "$dest/opt/ovsnet" "$dest/usr/local/bin/ovsnet" "$dest/etc/systemd/system/ovsnet.service"
  if live; then systemctl daemon-reload; fi
  echo "removed ovsnet; kept $dest/var/lib/ovsnet (state) and $dest/etc/default/ovsnet (settings)"
  exit 0
fi

[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -a package.json package-lock.json README.md docs "$stage/"
mkdir -p "$stage/dist" && cp -a dist/src "$stage/dist/"
cp -a node_modules "$stage/"
(cd "$stage" && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)

install -d "$dest/opt" "$dest/usr/local/bin" "$dest/etc/systemd/system" "$dest/etc/default" "$dest/var/lib/ovsnet"
chmod 0700 "$dest/var/lib/ovsnet"
rm -rf "$dest/opt/ovsnet.new" && cp -a "$stage" "$dest/opt/ovsnet.new"
rm -rf "$dest/opt/ovsnet" && mv "$dest/opt/ovsnet.new" "$dest/opt/ovsnet"
chmod +x "$dest/opt/ovsnet/dist/src/cli/main.js" "$dest/opt/ovsnet/dist/src/main.js"
ln -sf /opt/ovsnet/dist/src/cli/main.js "$dest/usr/local/bin/ovsnet"
forget_requires
install -m 0644 plugin/ovsnet.service "$dest/etc/systemd/system/ovsnet.service"
if [ ! -f "$dest/etc/default/ovsnet" ]; then
  {
    echo "# Settings of the ovsnet plugin (docs/operations.md: Daemon settings). Uncomment to change a default."
    node -e "import('./dist/src/config.js').then(({SETTINGS}) => { for (const s of SETTINGS) console.log('#' + s.name + '=' + s.default + '    # ' + s.description) })"
  } > "$dest/etc/default/ovsnet"
fi
if live; then
  systemctl daemon-reload
  systemctl enable ovsnet.service >/dev/null
  systemctl restart ovsnet.service
  echo "installed and started ovsnet.service"
else
  echo "installed into ${dest:-/} (no systemd running: start it with: node /opt/ovsnet/dist/src/main.js)"
fi
