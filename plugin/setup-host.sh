#!/usr/bin/env bash
# Brings a Debian/Ubuntu host up for the ovs plugin and starts it:
#   packages (Open vSwitch, Docker Engine, iptables, ethtool, busybox for the
#   test image), ovsdb-server + ovs-vswitchd, dockerd, the build, and the
#   plugin itself on /run/docker/plugins/ovs.sock.
# Safe to run again: what is installed or running is left as it is, except
# the plugin, which is restarted on the fresh build.
#
#   sudo bash plugin/setup-host.sh              # everything, plugin included
#   sudo bash plugin/setup-host.sh --ovn        # and a one-host OVN (northbound and southbound databases,
#                                               # ovn-northd, ovn-controller), with the plugin pointed at it
#   sudo bash plugin/setup-host.sh --no-plugin  # everything but starting the plugin
set -euo pipefail

start_plugin=1
ovn=0
for arg in "$@"; do
  case "$arg" in
    --no-plugin) start_plugin=0 ;;
    --ovn) ovn=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (valid: --ovn, --no-plugin)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "run as root (sudo bash $0)" >&2; exit 1; }
cd "$(dirname "$0")/.."
repo=$(pwd)
log() { printf '== %s\n' "$*"; }
have_systemd() { [ -d /run/systemd/system ] && systemctl is-system-running >/dev/null 2>&1; }

# curl, debootstrap and docker-registry serve the managed plugin's build and its tests (a base image without a
# registry, a local registry on loopback).
# OVN (ovn-central, ovn-host) serves OVN mode; its services are not started by the install (they are started
# below with --ovn, or by the operator), since a host usually runs only some of them.
# gcc and libc6-dev build the attack suite's raw-frame tool (test/e2e/harness/rawframe.c) into the test image;
# with fuse3, libfuse3-dev and pkg-config they build lossyfs (test/harness/lossyfs.c), the disk that forgets
# unsynced writes in the power-cut tests.
# graphviz lays out `ovsnet graph`'s picture (its dot program).
packages=(openvswitch-switch docker.io iptables nftables ethtool busybox-static iputils-ping iproute2 util-linux procps ca-certificates curl debootstrap docker-registry ovn-central ovn-host gcc libc6-dev fuse3 libfuse3-dev pkg-config graphviz)
missing=()
# Installed means installed: a package removed but not purged still answers dpkg -s.
for p in "${packages[@]}"; do [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$policy" ] || rm -f "$policy"
  if have_systemd; then
    for unit in ovn-central ovn-host ovn-northd ovn-controller ovn-ovsdb-server-nb ovn-ovsdb-server-sb; do
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
  # Debian's registry service would listen on every interface; the tests start their own on loopback.
  if have_systemd && systemctl is-enabled docker-registry >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
fi

# promtool checks the alert rules in docs/monitoring and runs their tests. It comes from Debian's prometheus
# package, unpacked rather than installed, so that no Prometheus server is set up and started on the host.
if ! command -v promtool >/dev/null 2>&1; then
  log "unpacking promtool from Debian's prometheus package"
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/unpacked"
  install -m 0755 "$tmp/unpacked/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] || { echo "Node.js 20 or newer is needed (found: $(node -v 2>/dev/null || echo none))" >&2; exit 1; }

if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  log "starting Open vSwitch"
  if have_systemd; then
    systemctl start openvswitch-switch
  else
    mkdir -p /var/run/openvswitch
    # ovs-ctl would try to load the kernel module for ovs-vswitchd; start that one by hand.
    /usr/share/openvswitch/scripts/ovs-ctl --no-ovs-vswitchd start --system-id=random >/dev/null
    ovs-vswitchd --pidfile --detach --log-file >/dev/null 2>&1
  fi
  ovs-vsctl --timeout=10 show >/dev/null
fi

if ! docker version >/dev/null 2>&1; then
  log "starting dockerd"
  if have_systemd; then
    systemctl start docker
  else
    setsid dockerd --host unix:///var/run/docker.sock >>/var/log/dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
  docker version >/dev/null || { echo "dockerd did not come up; see /var/log/dockerd.log" >&2; exit 1; }
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi
log "building"
npm run --silent build
chmod +x "$repo/dist/src/cli/main.js"
# The operator's command, from this checkout, unless install-daemon.sh put an installed one there.
if [ ! -e /usr/local/bin/ovsnet ] || [[ "$(readlink /usr/local/bin/ovsnet)" != /opt/ovsnet/* ]]; then
  ln -sf "$repo/dist/src/cli/main.js" /usr/local/bin/ovsnet
  log "ovsnet (the command) is /usr/local/bin/ovsnet"
fi

if ! docker image inspect local/busybox:latest >/dev/null 2>&1; then
  log "importing the test image local/busybox"
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,root}
  cp /bin/busybox "$rootfs/bin/"
  for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"; done
  tar -C "$rootfs" -c . | docker import - local/busybox:latest >/dev/null
  rm -rf "$rootfs"
fi

plugin_env=()
if [ "$ovn" = 1 ]; then
  # One host: the databases on local sockets, ovn-northd, and ovn-controller on this host's Open vSwitch
  # (a single chassis needs no tunnel; its encapsulation address is loopback).
  ctl=/usr/share/ovn/scripts/ovn-ctl
  if ! ovn-nbctl --timeout=3 show >/dev/null 2>&1; then
    log "starting OVN's northbound and southbound databases and ovn-northd"
    "$ctl" start_northd >/dev/null
  fi
  datapath=netdev
  [ -d /sys/module/openvswitch ] && datapath=system
  ovs-vsctl set open . external_ids:ovn-remote=unix:/var/run/ovn/ovnsb_db.sock external_ids:ovn-encap-type=geneve \
    external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge=br-int "external_ids:ovn-bridge-datapath-type=$datapath"
  [ -n "$(ovs-vsctl get open . external_ids:system-id 2>/dev/null)" ] || ovs-vsctl set open . "external_ids:system-id=$(hostname)"
  if ! ovn-appctl -t ovn-controller version >/dev/null 2>&1; then
    log "starting ovn-controller"
    "$ctl" start_controller >/dev/null
  fi
  for _ in $(seq 1 50); do ovs-vsctl br-exists br-int && break; sleep 0.2; done
  ovs-vsctl br-exists br-int || { echo "ovn-controller made no br-int; see /var/log/ovn/ovn-controller.log" >&2; exit 1; }
  plugin_env=(OVSNET_OVN_NB=unix:/var/run/ovn/ovnnb_db.sock)
fi

if [ "$start_plugin" = 1 ]; then
  pidfile=/run/ovsnet.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "stopping the running plugin"
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
  log "starting the plugin (log: /var/log/ovsnet.log)"
  setsid env "${plugin_env[@]}" node "$repo/dist/src/main.js" >>/var/log/ovsnet.log 2>&1 < /dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 1 50); do [ -S /run/docker/plugins/ovs.sock ] && break; sleep 0.1; done
  [ -S /run/docker/plugins/ovs.sock ] || { echo "the plugin did not start; see /var/log/ovsnet.log" >&2; tail -5 /var/log/ovsnet.log >&2; exit 1; }
  if [ "$ovn" = 1 ]; then
    log "ready: docker network create -d ovs --ipam-driver ovs -o mode=ovn --subnet 10.60.0.0/24 web"
  else
    log "ready: docker network create -d ovs --ipam-driver ovs ..."
  fi
fi
