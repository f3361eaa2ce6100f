#!/usr/bin/env bash
# `certmaint run` under libfaketime (issue 12, part 3): the wall clock steps
# 30 days forward and then a month back while the daemon runs, the monotonic
# and boot clocks untouched (FAKETIME_DONT_FAKE_MONOTONIC), as an NTP step or
# `date -s` does. No storm: each certificate renewed once after the step that
# expired them, none after the step back. No stall: renew passes keep coming
# every interval across both steps. Each step is logged as clock_jump.
source "$(dirname "$0")/lib.bash"

FT_LIB=""
for d in /usr/lib/x86_64-linux-gnu/faketime /usr/lib/faketime /usr/lib64/faketime; do
  [ -e "$d/libfaketimeMT.so.1" ] && FT_LIB=$d/libfaketimeMT.so.1 && break
done
[ -n "$FT_LIB" ] || { echo "not ok - libfaketime is not installed (scripts/deps.sh installs faketime)"; exit 1; }
stamp=$WORK/faketime
echo "+0" > "$stamp"
preload=$FT_LIB
# under the sanitizer build the runtimes come first, and faketime after them
[ -n "${CERTMAINT_HOST_PRELOAD:-}" ] && preload=$CERTMAINT_HOST_PRELOAD:$FT_LIB
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

export CERTMAINT_LIFETIME=1h CERTMAINT_RENEW_CHECK=2s
log=$WORK/run.log
LD_PRELOAD=$preload FAKETIME_TIMESTAMP_FILE=$stamp FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
  "$BIN" run "$POL/ok_basic.lua" 2>"$log" &
pid=$!; PIDS+=("$pid")

count() { grep -c -- "$1" "$log" || true; }
ticks() { count 'event=tick .*kind=renew'; }
check "obtains both certificates" wait_for 20 bash -c "[ \$(grep -c 'event=obtained' $log) -eq 2 ]"
check "renew passes every 2 s" wait_for 10 bash -c "[ \$(grep -c 'event=tick .*kind=renew' $log) -ge 2 ]"
check "nothing renewed yet (1 h certificates)" test "$(count 'event=renewed')" -eq 0

# forward 30 days: both certificates have expired by the wall clock
echo "+30d" > "$stamp"
t0=$(ticks)
check "the step forward is noticed (clock_jump, +30 d)" wait_for 15 grep -qE 'event=clock_jump delta=25920[0-9]{2}' "$log"
check "each expired certificate is renewed" wait_for 15 bash -c "[ \$(grep -c 'event=renewed' $log) -ge 2 ]"
sleep 6
check "exactly once each: no storm ($(count 'event=renewed') renewals)" test "$(count 'event=renewed')" -eq 2
check "renew passes go on after the step forward" test "$(ticks)" -ge $((t0 + 3))
check "one pass for the step, not one per missed interval ($(( $(ticks) - t0 )) passes in ~10 s)" \
  test $(( $(ticks) - t0 )) -le 8

# back a month (to a day before the real time): the new certificates are
# not valid yet by the wall clock, which is no reason to renew them again
echo "-1d" > "$stamp"
t1=$(ticks)
check "the step back is noticed (clock_jump, -31 d)" wait_for 15 grep -qE 'event=clock_jump delta=-26784[0-9]{2}' "$log"
sleep 6
check "the passes do not stall after the step back ($(( $(ticks) - t1 )) in ~6 s)" test "$(ticks)" -ge $((t1 + 2))
check "no renewal after the step back" test "$(count 'event=renewed')" -eq 2
check "no second order for a name (2 obtained, 2 renewed)" test "$(count 'event=obtained')" -eq 2

echo "+0" > "$stamp"
t2=$(ticks)
check "and back to real time: still ticking" wait_for 10 bash -c "[ \$(grep -c 'event=tick .*kind=renew' $log) -ge $((t2 + 2)) ]"
check "the watchdog saw no stalled pass" test "$(count 'event=pass_stalled')" -eq 0
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit 0" test "$rc" -eq 0
check "no error lines" test "$(count 'level=error')" -eq 0
finish
