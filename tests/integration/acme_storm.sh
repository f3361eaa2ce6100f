#!/usr/bin/env bash
# A renewal storm against real Pebble (issue 12, part 4): 60 certificates due
# at once under an order budget of 20 new orders per 45 s. certmaint spreads
# them: 20, then the rest as the window slides, earliest expiring first, the
# others waiting (one renewals_waiting event a pass, not one a certificate);
# the daemon is killed in the middle of the storm and restarted, and the
# budget still holds (its ledger is in storage). Counted from certmaint's
# ledger events and from Pebble's own log: no window over the budget, no
# order refused, every certificate obtained.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

N=60 BUDGET=20 WINDOW=45
export CERTMAINT_STORM_N=$N CERTMAINT_STORM_BUDGET=$BUDGET CERTMAINT_STORM_WINDOW=${WINDOW}s
pebble_start --nosleep
policy=$POL/acme_storm.lua
certs=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
log1=$WORK/run1.log log2=$WORK/run2.log
reserved() { cat "$log1" "$log2" 2>/dev/null | grep -c 'event=order_budget_reserved' || true; }
stored() { { find "$certs" -name '*.crt' 2>/dev/null || true; } | wc -l; }

: > "$log1"; : > "$log2"
"$BIN" run "$policy" 2>"$log1" &
pid=$!; PIDS+=("$pid")
check "the first window's $BUDGET orders are placed" wait_for 60 bash -c "[ \$(grep -c 'event=order_budget_reserved' $log1) -ge $BUDGET ]"
check "and the other $((N - BUDGET)) wait, said once" \
  wait_for 60 grep -q "event=renewals_waiting .*waiting=$((N - BUDGET)) " "$log1"
check "no order beyond the budget in the first window" test "$(reserved)" -eq "$BUDGET"

# kill the daemon in the middle of the second window's orders, start it again
check "the window slides: the second window's orders start" \
  wait_for 90 bash -c "[ \$(grep -c 'event=order_budget_reserved' $log1) -ge $((BUDGET + 5)) ]"
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
killed_at=$(reserved)
"$BIN" run "$policy" 2>"$log2" &
pid=$!; PIDS+=("$pid")
check "after the restart the storm goes on to all $N certificates" wait_for 150 bash -c "[ \$(find $certs -name '*.crt' | wc -l) -eq $N ]"
check "the restarted daemon waited for the budget (renewals_waiting)" grep -q "event=renewals_waiting" "$log2"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

figures=$(lua54 "$SRC/tests/integration/storm_count.lua" "$WINDOW" "$PEBBLE_LOG" "$log1" "$log2")
echo "# $figures (killed after $killed_at reservations)"
eval "$figures"
refused=$(cat "$log1" "$log2" | grep -c 'event=renew_failed\|rateLimited\|level=error' || true)
check "certmaint's ledger: at most $BUDGET orders in any $WINDOW s ($reserved_max)" test "$reserved_max" -le "$BUDGET"
check "Pebble: at most $BUDGET orders in any $WINDOW s ($pebble_max)" test "$pebble_max" -le "$BUDGET"
check "the budget was used, not just respected (a window held $BUDGET)" test "$reserved_max" -eq "$BUDGET"
check "every order Pebble saw was reserved first ($pebble_orders <= $reserved)" test "$pebble_orders" -le "$reserved"
check "Pebble issued $N certificates ($(pebble_issued))" test "$(pebble_issued)" -eq "$N"
check "none refused, no error logged ($refused)" test "$refused" -eq 0
waiting_events=$(cat "$log1" "$log2" | grep -c 'event=renewals_waiting' || true)
check "waiting is said once a pass ($waiting_events events), not once a certificate" test "$waiting_events" -lt 10
check "$N certificates stored" test "$(stored)" -eq "$N"
echo "STORM orders_per_window=$pebble_max budget=$BUDGET refused=$refused certificates=$(stored)"
finish
