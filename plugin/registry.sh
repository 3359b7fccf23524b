#!/usr/bin/env bash
# A local registry for the managed plugin (Debian's docker-registry), listening on loopback only, so that
# `docker plugin push` and `docker plugin install` can be used without Docker Hub.
#
#   sudo bash plugin/registry.sh start [storage dir]   (default /var/lib/ovsnet-registry; address 127.0.0.1:5000)
#   sudo bash plugin/registry.sh stop
set -euo pipefail
action=${1:-start}
storage=${2:-/var/lib/ovsnet-registry}
run=/run/ovsnet-registry
case "$action" in
  start)
    command -v docker-registry >/dev/null || { echo "docker-registry is missing: apt-get install docker-registry" >&2; exit 1; }
    if curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then echo "a registry already answers on 127.0.0.1:5000"; exit 0; fi
    mkdir -p "$storage" "$run"
    cat > "$run/config.yml" <<YAML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $storage }, delete: { enabled: true } }
http: { addr: 127.0.0.1:5000 }
YAML
    setsid docker-registry serve "$run/config.yml" >>"$run/registry.log" 2>&1 < /dev/null &
    echo $! > "$run/pid"
    for _ in $(seq 1 50); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { echo "the registry did not start; see $run/registry.log" >&2; exit 1; }
    echo "registry on 127.0.0.1:5000 (storage $storage)"
    ;;
  stop)
    if [ -f "$run/pid" ]; then
      pid=$(cat "$run/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$run/pid"
    ;;
  *) echo "usage: $0 start [storage dir] | stop" >&2; exit 2 ;;
esac
