#!/usr/bin/env bash
# A daemon killed (SIGKILL) in the middle of its ACME orders: the restart
# resumes each order from the URL kept in storage (certmaint/acme/orders/…)
# instead of opening a second one. Pebble validates after its random delay
# (no --nosleep), so the orders are still pending when the daemon dies.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --validity 3600
policy=$POL/acme_http01.lua
orders=$CERTMAINT_DATA/certmaint/acme/orders/$PEBBLE_ISSUER_KEY
log1=$WORK/run1.log log2=$WORK/run2.log
mkdir -p "$CERTMAINT_DATA"

"$BIN" run "$policy" 2>"$log1" &
pid=$!; PIDS+=("$pid")
check "the orders are kept in storage while they are open" \
  wait_for 20 bash -c "ls $orders/*.json >/dev/null 2>&1"
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
open=$(ls "$orders" 2>/dev/null | wc -l)
check "the daemon died with orders open ($open)" test "$open" -ge 1
before=$(pebble_orders)

"$BIN" run "$policy" 2>"$log2" &
pid=$!; PIDS+=("$pid")
check "after the restart every certificate is there" \
  wait_for 60 bash -c "[ \$(grep -c 'event=obtained' $log1 $log2 | awk -F: '{s+=\$2} END {print s}') -ge 3 ]"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
resumed=$(grep -c 'event=acme_order_resumed' "$log2" || true)
check "the restart resumed the open orders ($resumed of $open)" test "$resumed" -eq "$open"
check "no second order: Pebble created exactly one order per certificate ($(pebble_orders))" \
  test "$(pebble_orders)" -eq 3
check "no order opened after the restart ($before before, $(pebble_orders) after)" test "$(pebble_orders)" -eq "$before"
check "nothing is left open" bash -c "[ -z \"\$(ls -A $orders 2>/dev/null)\" ]"
for n in a.example.test b.example.test c.example.test; do
  check "$n is stored" test -s "$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY/$n/$n.crt"
done
finish
