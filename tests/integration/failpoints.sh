#!/usr/bin/env bash
# Every failpoint (`certmaint --failpoints`) x every action, against real
# Pebble (+ an OCSP responder) with the file storage, and etcd for the etcd
# and lock points: a first `certmaint once` with CERTMAINT_FAILPOINTS set
# obtains one certificate until the point triggers (crash-before/-after: the
# process is SIGKILLed there; enospc/eio: that step fails; sleep: it is
# late); then a restart without it (`certmaint once`: obtain, deploy, staple,
# clean) must succeed, and failpoints_check.lua checks the invariants (a valid
# certificate whose key matches, every stored value parses, modes, no temp or
# journal leftovers, deployed = stored), plus: no second order at Pebble once
# the first run had persisted its order. Each case has its own name, storage
# (folder or etcd prefix) and deploy folder; Pebble, the responder and etcd
# are shared. Prints
#   FAILPOINTS points=<p> actions=<a> cases=<n> failures=<f>
# FP_ONLY=REGEX limits the walk to matching points (debugging).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/ocsp.bash"
source "$(dirname "$0")/etcd.bash"
# each helper's trap replaces the last one's: all of them go, the responder first
trap 'ocsp_cleanup; etcd_stop; pebble_cleanup; cleanup' EXIT

etcd_env
ocsp_pebble_start --validity 3600 --nosleep
etcd_start
policy=$POL/failpoints.lua
checker=$SRC/tests/integration/failpoints_check.lua
mapfile -t points < <("$BIN" --failpoints | cut -f1)
actions=(crash-before crash-after enospc eio sleep:50)
check "certmaint --failpoints lists the points (${#points[@]})" test "${#points[@]}" -ge 20
check "a bad CERTMAINT_FAILPOINTS is refused, naming the entry" \
  bash -c "CERTMAINT_FAILPOINTS=no.such=eio '$BIN' once '$policy' 2>&1 | grep -q 'unknown point \"no.such\"'"
check "a bad action or hit number is refused, naming the entry" \
  bash -c "CERTMAINT_FAILPOINTS=acme.order=explode '$BIN' once '$policy' 2>&1 | grep -q '\"acme.order=explode\": the action must be' &&
    CERTMAINT_FAILPOINTS=acme.order=eio@0 '$BIN' once '$policy' 2>&1 | grep -q '@N must be a hit number'"
[ -n "${FP_ONLY:-}" ] && mapfile -t points < <(printf '%s\n' "${points[@]}" | grep -E "$FP_ONLY")

# where a point is walked: the etcd points on etcd, the lock points on both
backends_of() {
  case $1 in
    etcd.*) echo etcd ;;
    lock.*) echo file etcd ;;
    *) echo file ;;
  esac
}
# the issuer of a point's scenario: the storage-only points (file, commit)
# against the internal CA (no network: a case takes a fifth of the time),
# every other against Pebble, and the commit's deletes too (only an ACME
# certificate's commit deletes something: its order record)
issuer_of() {
  case $1 in
    commit.apply.delete) echo acme ;;
    file.*|commit.*) echo internal ;;
    *) echo acme ;;
  esac
}
issuer_key_of() { if [ "$1" = internal ]; then echo local; else echo "$PEBBLE_ISSUER_KEY"; fi; }
# what else a case arms so its point is reached within one `once`: the lock
# heartbeat (file: every 0.5 s, stale_after 1 s; etcd: every 1.5 s, lock_ttl 3 s)
# runs while the order waits at finalize
extra_of() {
  case $1 in
    lock.refresh|etcd.lease.keepalive) echo ",acme.finalize=sleep:2000" ;;
  esac
}
dead_pid() { sh -c 'echo $$'; }
# the first run: `certmaint once`, or for the lease revoke (only a daemon's
# shutdown closes the storage) `certmaint run` until obtained, then SIGTERM
first_run() { # POINT DIR
  if [ "$1" = etcd.lease.revoke ]; then
    "$BIN" run "$policy" >"$2/run1.out" 2>"$2/run1.log" &
    local pid=$!
    wait_for 30 grep -q 'event=obtained' "$2/run1.log" || true
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid"
  else
    timeout 60 "$BIN" once "$policy" >"$2/run1.out" 2>"$2/run1.log"
  fi
}
# the id of the order stored under KEY in the storage of this case (or nothing)
stored_order_id() { # BACKEND DATA PREFIX KEY
  local text
  if [ "$1" = file ]; then text=$(cat "$2/$4" 2>/dev/null) || return 0
  else text=$(etcd_get "$3/data/$4" 2>/dev/null) || return 0; fi
  grep -o '"url":"[^"]*"' <<<"$text" | head -1 | sed 's/"$//; s/.*\///' || true
}

# a fresh name, storage and deploy folder: sets name dir data deploy prefix
prepare_case() { # BACKEND ISSUER ID
  name=$3.example.test dir=$WORK/$3
  data=$dir/data deploy=$dir/deploy prefix=/fp/$3
  mkdir -p "$data" "$deploy"
  export CERTMAINT_DATA=$data FP_NAME=$name FP_DEPLOY=$deploy FP_STORAGE=$1 FP_ISSUER=$2 FP_PREFIX=$prefix
  if [ "$1" = file ]; then
    # a restart after a crash finds its predecessor's lock: taken over (file.replace)
    mkdir -p "$data/locks" && chmod 700 "$data" "$data/locks"
    lua54 -e "
      local core = require 'certmaint.core'
      local common = require 'certmaint.storage.common'
      local now = core.now()
      assert(core.write_atomic('$data/locks/issue_cert_$name.lock',
        common.encode_lock(core.hostname() .. ':$(dead_pid):0dead', now, now, 'g'), '0644'))"
  fi
}

# Which hits of each point a case aims at: the first; the first once the
# certificate is in hand (downloaded, or its commit staged: then its commit,
# the lock release, the deploy, the staple); the first in the deploy folder.
# From one traced run of the same scenario (CERTMAINT_FAILPOINTS_TRACE=1):
# HITS["BACKEND ISSUER POINT"]="1 N M".
declare -A HITS
trace_hits() { # BACKEND ISSUER
  local name dir data deploy prefix
  prepare_case "$1" "$2" "trace-$1-$2"
  CERTMAINT_FAILPOINTS_TRACE=1 \
    timeout 60 "$BIN" once "$policy" >"$dir/run1.out" 2>"$dir/run1.log" || true
  local line p h w after=0
  declare -A later deployed
  while read -r line; do
    p=${line#*name=}; p=${p%% *}; h=${line#*hit=}; h=${h%% *}; w=${line#*what=}
    [[ "$p" = acme.certificate || ( "$p" = commit.stage && "$w" = certificates/* ) ]] && after=1
    [ "$after" = 1 ] && [ -z "${later[$p]:-}" ] && later[$p]=$h
    [[ "$w" == "$deploy"/* ]] && [ -z "${deployed[$p]:-}" ] && deployed[$p]=$h
  done < <(grep -o 'event=failpoint_hit .*' "$dir/run1.log")
  for p in "${points[@]}"; do
    HITS["$1 $2 $p"]=$(printf '%s\n' 1 "${later[$p]:-1}" "${deployed[$p]:-1}" | sort -un | tr '\n' ' ')
  done
  rm -rf "$dir"
}

# One case, in the background: its failures go to $dir/../c<ID>.fail, one a line.
run_case() { # ID BACKEND POINT ACTION HIT
  local id=$1 backend=$2 point=$3 action=$4 hit=$5 issuer
  issuer=$(issuer_of "$point")
  local name dir data deploy prefix
  prepare_case "$backend" "$issuer" "c$id"
  local label="$backend $point=$action@$hit" failfile=$WORK/c$id.fail
  case_fail() { echo "FAIL $label: $*" >> "$failfile"; }
  local rc1=0 rc2=0
  # in a subshell: the shell's own "Killed" notice goes nowhere
  ( export CERTMAINT_FAILPOINTS="$point=$action@$hit$(extra_of "$point")"; first_run "$point" "$dir"; exit $? ) \
    2>/dev/null || rc1=$?
  if ! grep -q "event=failpoint_triggered name=$point action=${action%%:*}" "$dir/run1.log"; then
    case_fail "the point did not trigger (exit $rc1)"
  fi
  case $action in
    crash-*) [ "$rc1" -eq 137 ] || case_fail "the crash did not kill the process (exit $rc1)" ;;
  esac
  local order_id
  order_id=$(stored_order_id "$backend" "$data" "$prefix" "certmaint/acme/orders/$PEBBLE_ISSUER_KEY/$name.json")
  if [ "$backend" = file ]; then
    # the restart comes a tick later: what an unfinished write left is old by then
    find "$data" "$deploy" \( -name '.*.tmp-*' -o -name '.*.stale-*' \) -exec touch -h -d '-2 hours' {} + 2>/dev/null || true
    # a transaction without a manifest is abandoned once older than stale_after (1 s)
    if [ -n "$(ls -A "$data/journal" 2>/dev/null)" ]; then sleep 1.1; fi
  fi
  timeout 60 "$BIN" once "$policy" >"$dir/run2.out" 2>"$dir/run2.log" || rc2=$?
  [ "$rc2" -eq 0 ] || case_fail "the restart failed (exit $rc2): $(grep -m3 'level=error' "$dir/run2.log" | tr '\n' ' ')"
  if grep -q 'level=error' "$dir/run2.log"; then
    case_fail "the restart logged errors: $(grep -m3 'level=error' "$dir/run2.log" | tr '\n' ' ')"
  fi
  # a persisted order is resumed, unless it died at the CA meanwhile (Pebble
  # validated while no process answered: "order <id> set INVALID")
  if [ -n "$order_id" ] && grep -q "event=acme_order_created name=$name " "$dir/run2.log" &&
     ! grep -q "order $order_id set INVALID" "$PEBBLE_LOG"; then
    case_fail "a second order for $name although its order $order_id was persisted and still usable"
  fi
  local where=$data
  [ "$backend" = etcd ] && where=$ETCD_URL,$prefix
  if ! lua54 "$checker" "$backend" "$where" "$(issuer_key_of "$issuer")" "$deploy" "$name" >"$dir/check.out" 2>&1; then
    case_fail "$(tr '\n' ' ' < "$dir/check.out")"
  fi
  # what the CA saw, for the count below: orders this case made (the one a
  # crash-after at acme.order lost before certmaint could log it included)
  local made
  made=$(cat "$dir/run1.log" "$dir/run2.log" | grep -c 'event=acme_order_created' || true)
  [ "$point:$action" = acme.order:crash-after ] && made=$((made + 1))
  echo "$label rc1=$rc1 rc2=$rc2 order=${order_id:--} orders=$made" > "$WORK/c$id.done"
  if [ "${KEEP_WORK:-0}" != 1 ] && [ ! -s "$failfile" ]; then rm -rf "$dir"; fi
}

start=$SECONDS
orders_at_start=$(pebble_orders)
trace_hits file internal
trace_hits file acme
trace_hits etcd acme
trace_orders=$(( $(pebble_orders) - orders_at_start ))
# the cases are independent (own name, storage, deploy folder, account) and
# mostly wait for fsync and the servers: FP_JOBS (default 3) at a time
jobs_max=${FP_JOBS:-3}
cases=0 live=()
# (the servers are background jobs too: count the cases' own pids)
wait_for_slot() {
  local p still=()
  while :; do
    still=()
    for p in "${live[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
    live=("${still[@]}")
    [ "${#live[@]}" -lt "$1" ] && return 0
    sleep 0.05
  done
}
for point in "${points[@]}"; do
  for backend in $(backends_of "$point"); do
    for hit in ${HITS["$backend $(issuer_of "$point") $point"]}; do
      # the first hit gets every action; a later one the crashes and one error
      for action in "${actions[@]}"; do
        case $hit:$action in 1:*|*:crash-*|*:enospc) ;; *) continue ;; esac
        cases=$((cases + 1))
        wait_for_slot "$jobs_max"
        run_case "$cases" "$backend" "$point" "$action" "$hit" &
        live+=("$!")
      done
    done
  done
done
wait_for_slot 1
failures=0 finished=0 made=0
for id in $(seq 1 "$cases"); do
  [ -f "$WORK/c$id.done" ] && finished=$((finished + 1)) &&
    made=$((made + $(sed 's/.* orders=//' "$WORK/c$id.done")))
  if [ -s "$WORK/c$id.fail" ]; then failures=$((failures + 1)); cat "$WORK/c$id.fail"; fi
done
[ "${FP_VERBOSE:-0}" = 1 ] && cat "$WORK"/c*.done
echo "FAILPOINTS points=${#points[@]} actions=${#actions[@]} cases=$cases failures=$failures ($((SECONDS - start)) s, $jobs_max at a time; the first hit of each point with every action, later hits with crash-before, crash-after, enospc)"
check "every case ran to its end ($finished of $cases)" test "$finished" -eq "$cases"
check "every point x action: the invariants hold after the restart ($failures of $cases cases failed)" \
  test "$failures" -eq 0
check "Pebble created exactly the orders the cases account for ($(( $(pebble_orders) - orders_at_start - trace_orders )) = $made)" \
  test "$(( $(pebble_orders) - orders_at_start - trace_orders ))" -eq "$made"
finish
