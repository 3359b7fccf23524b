#!/usr/bin/env bash
# The managed plugin's real install path:
#   build the plugin (plugin/build-managed.sh), push it to a local registry on loopback (plugin/registry.sh),
#   as :latest and as :v2 (for the upgrade test), then run end-to-end tests with OVSNET_E2E_PLUGIN=managed:
#   each simulated host pulls it with `docker plugin install --alias ovs --grant-all-permissions`.
#
#   bash test/run-managed.sh [test files...]   build and push, then the tests (default: the files of test/managed.txt)
#   bash test/run-managed.sh --build-only      build and push only (test/run-all.sh then runs the tests per engine)
set -euo pipefail
cd "$(dirname "$0")/.."
ref=localhost:5000/ovsnet
# A registry of the tests' own, empty each run: a push cut short (a run stopped halfway) must not leave a blob
# that the next push skips and the next pull finds truncated.
storage=${OVSNET_E2E_REGISTRY:-/var/lib/ovsnet-test-registry}
bash plugin/registry.sh stop
rm -rf "$storage"
bash plugin/registry.sh start "$storage"
bash plugin/build-managed.sh "$ref:latest"
docker plugin push "$ref:latest" >/dev/null
# The second version differs by a build note, as a real upgrade differs by content.
rm -rf plugin/build-v2 && cp -a plugin/build plugin/build-v2
echo "upgrade test build $(date -u +%FT%TZ)" > plugin/build-v2/rootfs/opt/ovsnet/BUILD
docker plugin rm -f "$ref:v2" >/dev/null 2>&1 || true
docker plugin create "$ref:v2" plugin/build-v2 >/dev/null
docker plugin push "$ref:v2" >/dev/null
rm -rf plugin/build-v2
docker plugin rm -f "$ref:latest" "$ref:v2" >/dev/null
echo "== pushed $ref:latest and $ref:v2"
[ "${1:-}" = --build-only ] && exit 0
[ $# -gt 0 ] || mapfile -t files < <(grep -v '^#' test/managed.txt | sed '/^$/d; s|^|dist/|; s|\.ts$|.js|') && set -- "${files[@]}"
OVSNET_E2E_PLUGIN=managed OVSNET_E2E_PLUGIN_REF="$ref:latest" \
  node --test --test-reporter=spec --test-concurrency=1 "$@"
