#!/usr/bin/env bash
# Hostile policies (issue 7 A): `certmaint run` with policies that raise, loop
# (at load, on reload and in every hook kind), grow memory, make single
# expensive calls, tamper with the host, reach for certmaint.core, yield from
# hooks and pass garbage to the API. For each: the 8-second certificate is
# still renewed before it expires (its serial changes, more than once), and
# SIGTERM stops the daemon within a second. One daemon per case, side by side.
source "$(dirname "$0")/lib.bash"

CASES="raise loop_hooks memory expensive tamper yield garbage"
# SIGTERM to exit: under 1 s; the sanitizer build (everything several times
# slower, and a leak check at exit) gets 3 s
STOP_LIMIT_MS=1000
[ -n "${CERTMAINT_HOST_PRELOAD:-}" ] && STOP_LIMIT_MS=3000
declare -A PID LOG
start() { # start NAME POLICY_FILE
  local name=$1
  LOG[$name]=$WORK/$name.log
  mkdir -p "$WORK/$name"
  CERTMAINT_DATA=$WORK/$name CERTMAINT_LUA_MEMORY_MAX=$((512 * 1024 * 1024)) CERTMAINT_POLICY_LOAD_TIME=2 \
    "$BIN" run "$2" 2>"${LOG[$name]}" &
  PID[$name]=$!; PIDS+=("${PID[$name]}")
}
# distinct serials the log shows stored for hostile.test
serials() { grep -E 'event=(obtained|renewed) ' "$1" | grep -o 'serial=[0-9a-f]*' | sort -u | wc -l; }
not_expired() { openssl x509 -in "$WORK/$1/certificates/local/hostile.test/hostile.test.crt" -noout -checkend 0 >/dev/null; }
# stop NAME: SIGTERM and wait; sets STOP_MS (how long it took) and STOP_RC
stop() {
  local t0 t1
  t0=$(date +%s%N)
  kill -TERM "${PID[$1]}"
  set +e; wait "${PID[$1]}"; STOP_RC=$?; set -e
  t1=$(date +%s%N)
  STOP_MS=$(((t1 - t0) / 1000000))
}

# the reload case runs a plain policy from a folder we can change
cp "$POL/hostile_common.lua" "$WORK/"
echo 'return require("hostile_common")({})' > "$WORK/reload.lua"
suite_start=$SECONDS
for c in $CASES; do start "$c" "$POL/hostile_$c.lua"; done
start reload "$WORK/reload.lua"
start sigterm "$POL/hostile_sigterm.lua"

# --- loading: a top level that never returns --------------------------------
t0=$SECONDS
set +e
CERTMAINT_POLICY_LOAD_TIME=1 "$BIN" check "$POL/hostile_loop_load.lua" >"$WORK/check.out" 2>"$WORK/check.err"; rc=$?
set -e
check "load loop: check stops it, exit 2" test "$rc" -eq 2
check "load loop: check says the load ran out of time" \
  grep -q 'hostile_loop_load.lua: loading the policy exceeded its time limit of 1s' "$WORK/check.err"
set +e
CERTMAINT_POLICY_LOAD_TIME=1 CERTMAINT_DATA=$WORK/loadloop "$BIN" run "$POL/hostile_loop_load.lua" 2>"$WORK/run.err"; rc=$?
set -e
check "load loop: run refuses to start, exit 2" test "$rc" -eq 2
check "load loop: run says why" grep -q 'loading the policy exceeded its time limit of 1s' "$WORK/run.err"
check "load loop: both stopped within seconds" test $((SECONDS - t0)) -le 8

# --- SIGTERM while a hook runs away (its limit is 60 s) ---------------------
check "sigterm: the runaway on_tick is running" wait_for 20 grep -q 'event=runaway_started' "${LOG[sigterm]}"
sleep 0.3
stop sigterm
check "sigterm: SIGTERM mid-runaway stops the daemon in under $((STOP_LIMIT_MS / 1000)) s (${STOP_MS} ms)" test "$STOP_MS" -lt "$STOP_LIMIT_MS"
check "sigterm: exit status 0" test "$STOP_RC" -eq 0
check "sigterm: the runaway hook was stopped" \
  grep -q 'event=hook_failed.*code=stopping.*hook=on_tick' "${LOG[sigterm]}"

# --- SIGHUP: a reload that loops, one that tampers and fails, SIGTERM during one
r=${LOG[reload]}
check "reload: certificate obtained" wait_for 20 grep -q 'event=obtained' "$r"
cp "$POL/hostile_loop_load.lua" "$WORK/reload.lua"
kill -HUP "${PID[reload]}"
check "reload: a looping policy is stopped and reported" \
  wait_for 20 grep -q 'event=policy_reload_failed.*exceeded its time limit' "$r"
cp "$POL/hostile_tamper_broken.lua" "$WORK/reload.lua"
kill -HUP "${PID[reload]}"
check "reload: a tampering policy that fails to load is reported" \
  wait_for 10 grep -q 'event=policy_reload_failed.*this policy does not load' "$r"

# --- every case: renewed before expiry, more than once ----------------------
for c in $CASES reload; do
  check "$c: the certificate is renewed (3 serials within 40 s)" \
    wait_for 40 bash -c "[ \$(grep -E 'event=(obtained|renewed) ' ${LOG[$c]} | grep -o 'serial=[0-9a-f]*' | sort -u | wc -l) -ge 3 ]"
  check "$c: the stored certificate has not expired" not_expired "$c"
  check "$c: the daemon is alive" kill -0 "${PID[$c]}"
done

# what each case's log must show
has() { grep -q -- "$2" "${LOG[$1]}"; }
check "raise: each hook's failure is logged" bash -c "for h in needs_renewal allow_name on_tick on_renewed on_error; do grep -q \"event=hook_failed.*hook=\$h\" ${LOG[raise]} || exit 1; done"
check "raise: the default rule decided" has raise 'event=default_rule_decided'
check "loop_hooks: every hook kind stopped at its limit" bash -c "for h in needs_renewal allow_name on_tick on_renewed on_error; do grep -q \"event=hook_failed.*exceeded its time limit.*hook=\$h\" ${LOG[loop_hooks]} || exit 1; done"
check "loop_hooks: needs_renewal suspended, the default rule decides" has loop_hooks 'event=default_rule_decided'
check "memory: growth inside a call is stopped" has memory 'event=hook_failed.*ran out of memory.*hook=on_tick'
check "memory: state kept across calls disables the hooks" has memory 'event=policy_hooks_disabled'
# the step bound, or on a loaded machine the time limit checked from inside the matcher
check "expensive: the pathological pattern is refused" has expensive 'event=hook_failed.*\(pattern too complex\|exceeded its time limit\).*hook=needs_renewal'
check "expensive: a loop of big string.rep calls is stopped" has expensive 'event=hook_failed.*hook=allow_name'
check "expensive: huge concat/format results are refused" has expensive 'event=hook_failed.*ran out of memory.*hook=on_renewed'
check "tamper: no attempt on the host succeeded" bash -c "! grep -q 'event=tamper_succeeded' ${LOG[tamper]}"
check "tamper: the hooks ran (string methods intact in needs_renewal)" bash -c "! grep -q 'string methods broken' ${LOG[tamper]}"
check "yield: waiting in needs_renewal is refused" has yield 'event=hook_failed.*cannot wait.*hook=needs_renewal'
check "yield: yielding the task from on_tick is refused" has yield "event=hook_failed.*cannot suspend certmaint's task.*hook=on_tick"
check "yield: a load-time coroutine that loops in on_renewed is stopped" has yield 'event=hook_failed.*exceeded its time limit.*hook=on_renewed'
check "garbage: the unprotected bad call fails the hook only" has garbage 'event=hook_failed.*hook=on_tick'

# --- SIGTERM stops each within a second; the reload case mid-reload ---------
cp "$POL/hostile_loop_load.lua" "$WORK/reload.lua"
n=$(grep -c 'event=policy_reloading' "${LOG[reload]}")
kill -HUP "${PID[reload]}"
check "reload: the looping reload has begun" \
  wait_for 10 bash -c "[ \$(grep -c 'event=policy_reloading' ${LOG[reload]}) -gt $n ]"
for c in reload $CASES; do
  stop "$c"
  check "$c: SIGTERM stops it in under $((STOP_LIMIT_MS / 1000)) s (${STOP_MS} ms)" test "$STOP_MS" -lt "$STOP_LIMIT_MS"
  check "$c: exit status 0" test "$STOP_RC" -eq 0
done
check "reload: SIGTERM during a looping reload ends the reload" has reload 'event=policy_reload_failed.*stopped: the daemon is stopping'
echo "suite: $((SECONDS - suite_start)) s"
finish
