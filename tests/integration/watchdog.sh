#!/usr/bin/env bash
# The watchdog (engine/watchdog.lua) against the real binary: systemd's side
# of sd_notify played by a listener on an abstract socket; READY=1, WATCHDOG=1
# pings at half of WATCHDOG_USEC while healthy; a storage that hangs stalls
# the passes: pass_stalled (error) once a minute has passed (MIN_STALL; the
# intervals are 1 s), status --check exit 2, the pings stop;
# the storage comes back: pass_recovered, pings again; a stopped and a killed
# daemon are CRITICAL too.
source "$(dirname "$0")/lib.bash"

LISTEN=${CERTMAINT_BUILD_DIR:?}/tests/test_sdnotify
policy=$POL/watchdog_hanging_storage.lua
export CERTMAINT_HANG_FLAG=$WORK/hang
log=$WORK/run.log
notes=$WORK/notify.txt
sock="@certmaint-watchdog-$$"

"$LISTEN" --listen "$sock" 120 > "$notes" &
PIDS+=($!)
wait_for 5 grep -q '^listening' "$notes"

NOTIFY_SOCKET=$sock WATCHDOG_USEC=2000000 "$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
pings() { grep -c ' WATCHDOG=1$' "$notes" || true; }
# status in its own process sees a storage that answers (the flag hangs the daemon's only)
status() { CERTMAINT_HANG_FLAG=$WORK/never "$BIN" status "$policy" "$@"; }

check "READY=1 once start-up has loaded" wait_for 15 grep -q ' READY=1|STATUS=' "$notes"
check "the certificate is obtained" wait_for 15 grep -q 'event=obtained.*name=watch.test' "$log"
check "WATCHDOG=1 pings arrive while healthy" wait_for 10 bash -c "[ \$(grep -c ' WATCHDOG=1\$' $notes) -ge 3 ]"
# at half of WatchdogSec (2 s): about one a second, never two seconds apart
gaps=$(awk '/ WATCHDOG=1$/ { if (last != "") { g = $1 - last; if (g > max) max = g } last = $1 } END { printf "%.2f", max }' "$notes")
check "pings come at least every 1.5 s (largest gap ${gaps}s)" awk -v g="$gaps" 'BEGIN { exit !(g > 0 && g <= 1.5) }'
check "a STATUS= line says the passes are healthy" grep -q ' STATUS=1 certificates; passes healthy$' "$notes"
check "renew passes complete" wait_for 10 grep -q 'event=tick.*kind=renew' "$log"
set +e; status --check > "$WORK/check.txt"; rc=$?; set -e
check "status --check while healthy: exit 0" bash -c "[ $rc -eq 0 ] && grep -q '^certmaint OK' $WORK/check.txt"

touch "$CERTMAINT_HANG_FLAG"
check "the storage hangs" wait_for 15 grep -q 'event=test_storage_hanging' "$log"
check "a stalled pass is an error-level pass_stalled event naming it and how late" \
  wait_for 90 grep -qE 'level=error event=pass_stalled .*late=[0-9]+.*pass=(renew|ocsp|clean)' "$log"
n_stall=$(pings)
check "status --check: exit 2, CRITICAL, naming the stalled pass" bash -c "
  set +e; CERTMAINT_HANG_FLAG=$WORK/never '$BIN' status '$policy' --check > '$WORK/check2.txt'; rc=\$?; set -e
  [ \$rc -eq 2 ] && grep -qE '^certmaint CRITICAL: .*(renew|ocsp|clean) pass stalled' '$WORK/check2.txt'"
status --daemon --json > "$WORK/daemon.json"
check "status --daemon --json: the record says unhealthy with a stalled pass" \
  test "$(json_eval "$WORK/daemon.json" "tostring(v.record.healthy) .. ' ' .. tostring(#v.problems > 0)")" = "false true"
sleep 3
check "no WATCHDOG=1 while stalled (systemd would restart it): $n_stall before, $(pings) after 3 s" \
  test "$(pings)" -le "$((n_stall + 1))"
check "the STATUS= line says which pass stalled" grep -qE ' STATUS=.*pass stalled' "$notes"
check "the daemon is alive meanwhile (the loop itself runs)" kill -0 "$pid"

rm -f "$CERTMAINT_HANG_FLAG"
check "storage back: pass_recovered" wait_for 20 grep -q 'event=pass_recovered' "$log"
n_back=$(pings)
check "and the pings resume" wait_for 10 bash -c "[ \$(grep -c ' WATCHDOG=1\$' $notes) -gt $((n_back + 1)) ]"
check "status --check: exit 0 again" wait_for 10 bash -c "CERTMAINT_HANG_FLAG=$WORK/never '$BIN' status '$policy' --check >/dev/null"

kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit 0" test "$rc" -eq 0
check "STOPPING=1 on the way out" grep -q ' STOPPING=1$' "$notes"
set +e; status --check > "$WORK/check3.txt"; rc=$?; set -e
check "status --check after a stop: exit 2, the daemon stopped" \
  bash -c "[ $rc -eq 2 ] && grep -q '^certmaint CRITICAL: daemon stopped at ' $WORK/check3.txt"

# a daemon killed with no chance to say so
"$BIN" run "$policy" 2>"$WORK/run2.log" &
pid2=$!; PIDS+=("$pid2")
check "a second daemon runs" wait_for 15 grep -q 'event=tick' "$WORK/run2.log"
kill -KILL "$pid2"; wait "$pid2" 2>/dev/null || true
set +e; status --check > "$WORK/check4.txt"; rc=$?; set -e
check "status --check after kill -9: exit 2, the daemon is not running" \
  bash -c "[ $rc -eq 2 ] && grep -qE '^certmaint CRITICAL: daemon \\(pid $pid2\\) is not running' $WORK/check4.txt"
check "no error lines besides the planned stall" \
  bash -c "[ \$(grep 'level=error' $log | grep -vc 'event=pass_stalled') -eq 0 ]"
finish
