# Shared helpers for the integration scripts (sourced, not a test itself).
set -euo pipefail
BIN=${CERTMAINT_BIN:?CERTMAINT_BIN must point at the certmaint binary}
SRC=${CERTMAINT_SOURCE_DIR:?}
POL=$SRC/tests/integration/policies
WORK=$(mktemp -d /tmp/certmaint-it.XXXXXX)
export CERTMAINT_DATA=$WORK/data
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  # a helper's stopped loop may leave a child (an openssl of the OCSP index
  # sync) that writes one more file while rm runs: "Directory not empty"
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"
  else rm -rf "$WORK" 2>/dev/null || { sleep 1; rm -rf "$WORK"; }; fi
}
trap cleanup EXIT
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; }
# wait_for SECONDS CMD...: poll until CMD succeeds
wait_for() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  while [ $SECONDS -lt $end ]; do "$@" && return 0; sleep 0.2; done
  return 1
}
# lua5.4 on certmaint's module; under the sanitizer build the runtimes must be
# preloaded into the stock interpreter, and its own leaks are not ours to report
lua54() {
  if [ -n "${CERTMAINT_HOST_PRELOAD:-}" ]; then
    LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0 lua5.4 "$@"
  else
    lua5.4 "$@"
  fi
}
# json_eval FILE LUA_EXPR: evaluate an expression over the decoded JSON `v`
json_eval() {
  lua54 -e "local core = require 'certmaint.core'; local f = assert(io.open('$1')); local v = assert(core.json_decode(f:read('a'))); f:close(); print($2)"
}
