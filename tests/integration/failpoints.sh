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
[ -n "${FP_ONLY:-}" ] && mapfile -t points < <(printf '%s\n' "${points[@]}" | grep -E "$FP_ONLY")

# where a point is walked: the etcd points on etcd, the lock points on both
backends_of() {
  case $1 in
    etcd.*) echo etcd ;;
    lock.*) echo file etcd ;;
    *) echo file ;;
  esac
}
# what else a case arms so its point is reached within one `once`: the lock
# heartbeat (file: every 1 s, stale_after 2 s; etcd: every 1.5 s, lock_ttl 3 s)
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
  grep -o '"url":"[^"]*"' <<<"$text" | head -1 | sed 's/"$//; s/.*\///'
}

cases=0 failures=0
: > "$WORK/failures.txt"
case_fail() {
  failures=$((failures + 1))
  echo "FAIL $label: $*" | tee -a "$WORK/failures.txt"
}

# a fresh name, storage and deploy folder: sets name dir data deploy prefix
prepare_case() { # BACKEND ID
  name=$2.example.test dir=$WORK/$2
  data=$dir/data deploy=$dir/deploy prefix=/fp/$2
  mkdir -p "$data" "$deploy"
  export CERTMAINT_DATA=$data FP_NAME=$name FP_DEPLOY=$deploy FP_STORAGE=$1 FP_PREFIX=$prefix
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

# Which hits of each point a case aims at: the first; the first after the
# certificate is downloaded (its commit, the lock release, the deploy, the
# staple); the first in the deploy folder. From one traced run of the same
# scenario (CERTMAINT_FAILPOINTS_TRACE=1): HITS["BACKEND POINT"]="1 N M".
declare -A HITS
trace_hits() { # BACKEND
  local name dir data deploy prefix
  prepare_case "$1" "trace-$1"
  CERTMAINT_FAILPOINTS_TRACE=1 \
    timeout 60 "$BIN" once "$policy" >"$dir/run1.out" 2>"$dir/run1.log" || true
  local line p h w after=0
  declare -A later deployed
  while read -r line; do
    p=${line#*name=}; p=${p%% *}; h=${line#*hit=}; h=${h%% *}; w=${line#*what=}
    [ "$p" = acme.certificate ] && after=1
    [ "$after" = 1 ] && [ -z "${later[$p]:-}" ] && later[$p]=$h
    [[ "$w" == "$deploy"/* ]] && [ -z "${deployed[$p]:-}" ] && deployed[$p]=$h
  done < <(grep -o 'event=failpoint_hit .*' "$dir/run1.log")
  for p in "${points[@]}"; do
    HITS["$1 $p"]=$(printf '%s\n' 1 "${later[$p]:-1}" "${deployed[$p]:-1}" | sort -un | tr '\n' ' ')
  done
  rm -rf "$dir"
}

run_case() { # BACKEND POINT ACTION HIT
  local backend=$1 point=$2 action=$3 hit=$4
  cases=$((cases + 1))
  local name dir data deploy prefix
  prepare_case "$backend" "c$cases"
  label="$backend $point=$action@$hit"
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
  local order_key=certmaint/acme/orders/$PEBBLE_ISSUER_KEY/$name.json order_id
  order_id=$(stored_order_id "$backend" "$data" "$prefix" "$order_key")
  if [ "$backend" = file ]; then
    # the restart comes a tick later: what an unfinished write left is old by then
    find "$data" "$deploy" \( -name '.*.tmp-*' -o -name '.*.stale-*' \) -exec touch -h -d '-2 hours' {} + 2>/dev/null || true
    # a transaction without a manifest is abandoned once older than stale_after (2 s)
    [ -n "$(ls -A "$data/journal" 2>/dev/null)" ] && sleep 2.1
  fi
  local orders_before
  orders_before=$(pebble_orders)
  timeout 60 "$BIN" once "$policy" >"$dir/run2.out" 2>"$dir/run2.log" || rc2=$?
  [ "$rc2" -eq 0 ] || case_fail "the restart failed (exit $rc2): $(grep -m3 'level=error' "$dir/run2.log" | tr '\n' ' ')"
  if grep -q 'level=error' "$dir/run2.log"; then
    case_fail "the restart logged errors: $(grep -m3 'level=error' "$dir/run2.log" | tr '\n' ' ')"
  fi
  # a persisted order is resumed, unless it died at the CA meanwhile (Pebble
  # validated while no process answered: "order <id> set INVALID")
  if [ -n "$order_id" ] && [ "$(pebble_orders)" -ne "$orders_before" ] &&
     ! grep -q "order $order_id set INVALID" "$PEBBLE_LOG"; then
    case_fail "a second order for $name although its order $order_id was persisted and still usable"
  fi
  echo "$label rc1=$rc1 rc2=$rc2 order=${order_id:--} orders=$orders_before->$(pebble_orders)" >> "$WORK/cases.txt"
  local where=$data
  [ "$backend" = etcd ] && where=$ETCD_URL,$prefix
  if ! lua54 "$checker" "$backend" "$where" "$PEBBLE_ISSUER_KEY" "$deploy" "$name" >"$dir/check.out" 2>&1; then
    case_fail "$(tr '\n' ' ' < "$dir/check.out")"
  fi
  if [ "${KEEP_WORK:-0}" != 1 ] && ! grep -q "^FAIL $label:" "$WORK/failures.txt"; then rm -rf "$dir"; fi
}

start=$SECONDS
trace_hits file
trace_hits etcd
for point in "${points[@]}"; do
  for backend in $(backends_of "$point"); do
    for hit in ${HITS["$backend $point"]}; do
      # the first hit gets every action; a later one the crashes and one error
      for action in "${actions[@]}"; do
        case $hit:$action in 1:*|*:crash-*|*:enospc) run_case "$backend" "$point" "$action" "$hit" ;; esac
      done
    done
  done
done
[ "${FP_VERBOSE:-0}" = 1 ] && cat "$WORK/cases.txt"
echo "FAILPOINTS points=${#points[@]} actions=${#actions[@]} cases=$cases failures=$failures ($((SECONDS - start)) s; the first hit of each point with every action, later hits with crash-before, crash-after, enospc)"
check "every point x action: the invariants hold after the restart ($failures of $cases cases failed)" \
  test "$failures" -eq 0
finish
