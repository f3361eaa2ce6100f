#!/usr/bin/env bash
# A restart after kill -9 takes over its dead predecessor's locks at once: the
# lock file names its owner (host:pid:random); a pid of this host that no
# longer exists holds nothing, so nobody waits the whole stale_after.
source "$(dirname "$0")/lib.bash"
mkdir -p "$CERTMAINT_DATA"

export CERTMAINT_STALE_AFTER=120s
lockf=$CERTMAINT_DATA/locks/issue_cert_slow.test.lock
log1=$WORK/first.log; log2=$WORK/second.log

"$BIN" run "$POL/ok_slow_issuer.lua" 2>"$log1" &
first=$!; PIDS+=("$first")
check "first run: issuing, holding the certificate's lock" wait_for 10 grep -q 'event=slow_issue_started' "$log1"
check "the lock file names this host and the first run's pid" grep -q "\"owner\":\"$(hostname):$first:" "$lockf"
kill -KILL "$first"; wait "$first" 2>/dev/null || true
check "the lock file outlives its owner" test -s "$lockf"

start=$SECONDS
"$BIN" run "$POL/ok_slow_issuer.lua" 2>"$log2" &
second=$!; PIDS+=("$second")
check "the restart takes the dead owner's lock over at once, saying why" \
  wait_for 10 grep -q "event=lock_taken_over lock=issue_cert_slow.test reason=owner_dead stale_owner=$(hostname):$first:" "$log2"
check "the restart obtains the certificate" wait_for 20 grep -q 'event=obtained .*name=slow.test' "$log2"
check "well before stale_after (120 s): $((SECONDS - start)) s" test $((SECONDS - start)) -lt 30
kill -TERM "$second"
check "SIGTERM stops the restarted daemon" wait_for 10 bash -c "! kill -0 $second 2>/dev/null"
check "no error lines" bash -c "! grep -q 'level=error' $log2"

# SIGTERM while a renewal waits for a lock a live process holds: the waiting
# job holds nothing, so the daemon stops at once instead of after the grace
rm -rf "$CERTMAINT_DATA"; mkdir -p "$CERTMAINT_DATA/locks"
sleep 600 & holder=$!; PIDS+=("$holder")
lua54 -e "
  local core = require 'certmaint.core'
  local common = require 'certmaint.storage.common'
  local now = core.now()
  assert(core.write_atomic('$lockf', common.encode_lock(core.hostname() .. ':$holder:abcdef', now, now, 'g'), '0644'))"
log3=$WORK/third.log
"$BIN" run "$POL/ok_slow_issuer.lua" 2>"$log3" &
third=$!; PIDS+=("$third")
check "a renewal waits for the live holder's lock" wait_for 10 grep -q 'event=job_queued name=renew:slow.test' "$log3"
sleep 1
kill -TERM "$third"
gone_within_a_second() { for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; return 1; }
check "SIGTERM stops a daemon waiting for a lock within a second" gone_within_a_second "$third"
check "it said stopped" wait_for 2 grep -q 'event=stopped' "$log3"
check "the holder's lock is untouched" grep -q "\"owner\":\"$(hostname):$holder:abcdef\"" "$lockf"
kill "$holder" 2>/dev/null || true
finish
