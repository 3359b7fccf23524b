#!/usr/bin/env bash
# Every test, cheapest first, each stage timed (what `sudo npm test` runs, after the build):
#   unit, HTTP, integration;
#   then two groups at once, each on simulated hosts of its own (OVSNET_E2E_TAG keeps their names apart), of
#   about the same length:
#     full:   the whole end-to-end suite and test/e2e-current on Docker 28.5 (the current Debian package), then
#             the managed plugin (built and pushed to a registry on loopback) on 26.1 and 29.7;
#     compat: the compatibility suite (test/compat.txt) on 20.10, 26.1 and 29.7 (with test/e2e-current and
#             test/e2e-29), the same suite on 29.7 with its nftables firewall, the daemon under a real systemd
#             (test/e2e-systemd: a container with systemd as init, Docker and Open vSwitch inside), then the
#             managed plugin on 20.10 (the system's engine);
#   and, once the full group has pushed the managed plugin, beside both:
#     swarm:  swarm services on three simulated hosts as a swarm (test/e2e-managed/swarm.test.ts; swarm takes
#             only managed plugins) on 26.1, then 29.7.
# A stage that fails fails the run; the others still run, and every stage's log is kept in $OVSNET_TEST_LOGS
# (default /tmp/ovsnet-test-logs) and shown when it failed.
#
#   sudo bash test/run-all.sh            (after npm run build) every stage
#   sudo bash test/run-all.sh full       unit, HTTP, integration, then the full group and swarm only
#   sudo bash test/run-all.sh compat     unit, HTTP, integration, then the compatibility group only
set -uo pipefail
only=${1:-all}
case $only in all|full|compat) ;; *) echo "usage: $0 [all|full|compat]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
logs=${OVSNET_TEST_LOGS:-/tmp/ovsnet-test-logs}
rm -rf "$logs" && mkdir -p "$logs"
failed=()

# stage NAME COMMAND...: runs it with its output in $logs/NAME.log, prints how long it took.
stage() {
  local name=$1 start=$SECONDS status
  shift
  echo "== $name: started"
  "$@" >"$logs/$name.log" 2>&1
  status=$?
  grep -E '^ℹ (tests|pass|fail) ' "$logs/$name.log" | tr '\n' ' ' | sed 's/ℹ //g; s/^/   /; s/ *$/\n/'
  if [ $status -eq 0 ]; then
    echo "== $name: passed in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED (exit $status) in $((SECONDS - start)) s; the end of its log:"
    tail -n 80 "$logs/$name.log"
    failed+=("$name")
  fi
  return $status
}

node_test() { node --test --test-reporter=spec --test-concurrency=1 "$@"; }
# e2e VAR=VALUE... -- FILES...: the end-to-end files with those settings (OVSNET_E2E_ENGINE, _TAG, _FIREWALL, _PLUGIN).
e2e() {
  local vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  env "${vars[@]}" node --test --test-reporter=spec --test-concurrency=1 "$@"
}
list() { grep -v '^#' "$1" | sed '/^$/d; s|^|dist/|; s|\.ts$|.js|'; }

full_group() {
  local ok=0
  # Whatever ends this group, the swarm lane is told whether the managed plugin was pushed.
  trap '[ -f "$logs/managed-build.status" ] || echo failed > "$logs/managed-build.status"' EXIT
  stage e2e-full-28.5 e2e OVSNET_E2E_ENGINE=28.5 -- dist/test/e2e/*.test.js dist/test/e2e-current/*.test.js || ok=1
  if ! stage managed-build bash test/run-managed.sh --build-only; then
    echo failed > "$logs/managed-build.status"
    return 1
  fi
  echo pushed > "$logs/managed-build.status"
  mapfile -t managed < <(list test/managed.txt)
  for run in 26.1:m26 29.7:m29; do
    stage "managed-${run%%:*}" e2e OVSNET_E2E_PLUGIN=managed OVSNET_E2E_ENGINE="${run%%:*}" OVSNET_E2E_TAG="${run##*:}" -- "${managed[@]}" || ok=1
  done
  return $ok
}

# pushed NAME: waits until the full group has said whether it pushed the managed plugin; true if it did.
pushed() {
  until [ -f "$logs/managed-build.status" ]; do sleep 5; done
  [ "$(cat "$logs/managed-build.status")" = pushed ] || { echo "== $1: not run, the managed build failed"; return 1; }
}

# The swarm suite on 26.1 and 29.7, once the full group has pushed the managed plugin (its hosts pull it).
swarm_group() {
  local ok=0
  pushed swarm || return 1
  for run in 26.1:s26 29.7:s29; do
    stage "swarm-${run%%:*}" e2e OVSNET_E2E_PLUGIN=managed OVSNET_E2E_ENGINE="${run%%:*}" OVSNET_E2E_TAG="${run##*:}" -- dist/test/e2e-managed/swarm.test.js || ok=1
  done
  return $ok
}

compat_group() {
  local ok=0
  mapfile -t files < <(list test/compat.txt)
  stage e2e-compat-20.10 e2e OVSNET_E2E_ENGINE=system OVSNET_E2E_TAG=c20 -- "${files[@]}" || ok=1
  stage e2e-compat-26.1 e2e OVSNET_E2E_ENGINE=26.1 OVSNET_E2E_TAG=c26 -- "${files[@]}" || ok=1
  stage e2e-compat-29.7 e2e OVSNET_E2E_ENGINE=29.7 OVSNET_E2E_TAG=c29 -- "${files[@]}" dist/test/e2e-current/*.test.js dist/test/e2e-29/*.test.js || ok=1
  stage e2e-nftables-29.7 e2e OVSNET_E2E_FIREWALL=nftables OVSNET_E2E_ENGINE=29.7 OVSNET_E2E_TAG=n29 -- "${files[@]}" || ok=1
  # Last: by then the full group has made the base image (plugin/make-base.sh) this one builds on.
  stage e2e-systemd node_test dist/test/e2e-systemd/*.test.js || ok=1
  # The managed plugin on the system's engine: here rather than in the full group, which is the longer.
  if [ "$only" = compat ]; then
    if stage managed-build bash test/run-managed.sh --build-only; then echo pushed; else echo failed; fi > "$logs/managed-build.status"
  fi
  if pushed managed-system; then
    mapfile -t managed < <(list test/managed.txt)
    stage managed-system e2e OVSNET_E2E_PLUGIN=managed OVSNET_E2E_ENGINE=system OVSNET_E2E_TAG=m20 -- "${managed[@]}" || ok=1
  else
    ok=1
  fi
  return $ok
}

total=$SECONDS
stage unit node --test --test-reporter=spec dist/test/unit/*.test.js
stage http node --test --test-reporter=spec dist/test/http/*.test.js
stage integration node_test dist/test/integration/*.test.js
stage engines bash test/install-engines.sh
stage test-tools bash test/install-test-tools.sh
if [ ${#failed[@]} -eq 0 ]; then
  # The groups at once: most of an end-to-end test is waiting for daemons, and each group has hosts of its own.
  pids=()
  for group in full compat swarm; do
    [ "$only" = all ] || [ "$only" = $group ] || { [ "$only" = full ] && [ $group = swarm ]; } || continue
    ${group}_group > "$logs/group-$group.out" 2>&1 &
    pids+=("$group:$!")
  done
  for entry in "${pids[@]}"; do
    wait "${entry##*:}" || failed+=("${entry%%:*}")
    cat "$logs/group-${entry%%:*}.out"
  done
fi
echo "== all stages: $((SECONDS - total)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED: ${failed[*]} (logs in $logs)"
  exit 1
fi
echo "== every test passed"
