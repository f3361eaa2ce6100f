#!/usr/bin/env bash
# A restart in the middle of ACME orders resumes each of them from the URL
# kept in storage (certmaint/acme/orders/…) instead of opening a second one.
# The orders are held open deterministically: another process holds the
# http-01 port, so no challenge can be presented (and Pebble validates
# nothing); the daemon is then killed (SIGKILL), the port freed, and a new
# `certmaint renew` finishes the very same orders. One of them cannot be
# stored after the CA issued it: the next attempt takes that certificate
# (its CSR's key was stored with the order before finalize), no second one.
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

# a.example.test's certificate cannot be stored this time (a file where its
# folder goes): the CA issues it, storing it fails after that
site_a=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY/a.example.test
mkdir -p "$(dirname "$site_a")"
echo "in the way" > "$site_a"

# the failures left a back-off in storage: `renew` asks now, as an operator would
"$BIN" renew "$policy" a.example.test b.example.test c.example.test >"$WORK/renew.out" 2>"$log2" || true
check "after the restart b and c are obtained" test "$(grep -c ' obtained ' "$WORK/renew.out")" -eq 2
check "the restart resumed the three stored orders" test "$(grep -c 'event=acme_order_resumed' "$log2")" -eq 3
check "no second order: Pebble still has 3 ($(pebble_orders))" test "$(pebble_orders)" -eq 3
check "Pebble issued 3 certificates" test "$(pebble_issued)" -eq 3
check "a.example.test's store failed, naming its folder" \
  grep -q "^a.example.test .*failed .*certificates/$PEBBLE_ISSUER_KEY/a.example.test: Not a directory" "$WORK/renew.out"
check "its order and its CSR's key stay in storage" test -s "$orders/a.example.test.json" -a -s "$orders/a.example.test.key"
check "the key is 0600" test "$(stat -c %a "$orders/a.example.test.key")" = 600
for n in b.example.test c.example.test; do
  check "$n is stored" test -s "$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY/$n/$n.crt"
done

# storage is fixed: the next attempt takes the certificate the CA already
# issued for the stored key, instead of ordering it again
rm -f "$site_a"
log3=$WORK/run3.log
"$BIN" renew "$policy" a.example.test >"$WORK/renew3.out" 2>"$log3" || cat "$WORK/renew3.out" "$log3"
check "a.example.test is obtained" test "$(grep -c ' obtained ' "$WORK/renew3.out")" -eq 1
check "from its finalized order (resumed, status valid)" grep -q "event=acme_order_resumed.*status=valid" "$log3"
check "no new order ($(pebble_orders)) and no new issuance ($(pebble_issued))" \
  test "$(pebble_orders)" -eq 3 -a "$(pebble_issued)" -eq 3
check "a.example.test is stored" test -s "$site_a/a.example.test.crt"
check "with the key its CSR was made for" bash -c "[ \"\$(openssl x509 -in '$site_a/a.example.test.crt' -noout -pubkey)\" = \"\$(openssl pkey -in '$site_a/a.example.test.key' -pubout)\" ]"
check "nothing is left open (orders and their keys deleted with the commit)" \
  test "$(count "$orders" '*.json')" -eq 0 -a "$(count "$orders" '*.key')" -eq 0
finish
