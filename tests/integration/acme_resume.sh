#!/usr/bin/env bash
# A restart in the middle of ACME orders resumes each of them from the URL
# kept in storage (certmaint/acme/orders/…) instead of opening a second one.
# The orders are held open deterministically: another process holds the
# http-01 port, so no challenge can be presented (and Pebble validates
# nothing); the daemon is then killed (SIGKILL), the port freed, and a new
# `certmaint renew` finishes the very same orders.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --validity 3600 --nosleep
policy=$POL/acme_http01.lua
orders=$CERTMAINT_DATA/certmaint/acme/orders/$PEBBLE_ISSUER_KEY
log1=$WORK/run1.log log2=$WORK/run2.log
mkdir -p "$CERTMAINT_DATA"
count() { { find "$1" -name "$2" 2>/dev/null || true; } | wc -l; }

# something else listens on the http-01 port (exec: the pid is the listener's)
(
  [ -n "${CERTMAINT_HOST_PRELOAD:-}" ] && export LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0
  exec lua5.4 -e "local core = require 'certmaint.core'
    assert(core.http_serve { listen = '127.0.0.1:$PEBBLE_HTTP_PORT' })
    while true do core.step(-1) end"
) &
squatter=$!; PIDS+=("$squatter")
wait_for 5 bash -c "ss -Hltn | grep -q ':$PEBBLE_HTTP_PORT '"

: > "$log1"
"$BIN" run "$policy" 2>"$log1" &
pid=$!; PIDS+=("$pid")
check "with the port taken the challenges fail, naming it" \
  wait_for 20 bash -c "[ \$(grep -c 'event=job_failed.*listening on 127.0.0.1:$PEBBLE_HTTP_PORT' $log1) -ge 3 ]"
check "and the three orders stay open in storage" test "$(count "$orders" '*.json')" -eq 3
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
kill -KILL "$squatter"; wait "$squatter" 2>/dev/null || true
before=$(pebble_orders)
check "Pebble has one order per certificate so far ($before)" test "$before" -eq 3

# the failures left a back-off in storage: `renew` asks now, as an operator would
"$BIN" renew "$policy" a.example.test b.example.test c.example.test >"$WORK/renew.out" 2>"$log2" || cat "$WORK/renew.out" "$log2"
check "after the restart every certificate is obtained" test "$(grep -c ' obtained ' "$WORK/renew.out")" -eq 3
check "the restart resumed the three stored orders" test "$(grep -c 'event=acme_order_resumed' "$log2")" -eq 3
check "no second order: Pebble still has 3 ($(pebble_orders))" test "$(pebble_orders)" -eq 3
check "Pebble issued 3 certificates" test "$(pebble_issued)" -eq 3
check "nothing is left open" test "$(count "$orders" '*.json')" -eq 0
for n in a.example.test b.example.test c.example.test; do
  check "$n is stored" test -s "$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY/$n/$n.crt"
done
finish
