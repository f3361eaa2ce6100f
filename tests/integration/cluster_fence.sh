#!/usr/bin/env bash
# Fencing across instances on a real etcd: member 2 or 3, caught holding a
# renewal's lock (Pebble paused for the moment), is frozen with SIGSTOP past
# its 6 s lease (above the 5 s heartbeat); another member takes the lock and renews. Thawed (SIGCONT),
# the paused member cannot overwrite what the new holder committed: it is
# refused (`commit_fenced` when it reaches its commit; `lock_lost` and a failed
# renewal when the lost lease is found first -- the FIGURE line says which),
# storage keeps the new holder's certificate, and the paused member ends up
# loading that one.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/etcd.bash"
source "$(dirname "$0")/cluster.bash"

pebble_start --validity 40 --nosleep
etcd_start
cluster_env etcd
export CLUSTER_LOCK_TTL=6s
for i in 1 2 3; do member_start "$i"; done
check "every one of the 12 names is obtained" wait_for 90 cluster_issued_at_least 1
check "a member (2 or 3) is caught holding a renewal's lock" cluster_catch_lock_holder
paused=$CAUGHT_MEMBER name=$CAUGHT_NAME
member_pause "$paused"
pebble_resume
echo "member $paused paused (SIGSTOP) holding the lock of $name"
others=()
for i in 1 2 3; do [ "$i" = "$paused" ] || others+=("$i"); done
renewed_by_other() { local i; for i in "${others[@]}"; do [ -n "$(member_events "$i" renewed "$name")" ] && return 0; done; return 1; }
check "another member renews $name once the paused holder's lease is gone" wait_for 40 renewed_by_other
sleep 1
member_resume "$paused"
echo "member $paused resumed (SIGCONT)"
# Refused either at the commit (etcd's fenced txn: commit_fenced) or before
# it: the heartbeat finds the lease gone (lock_lost) and the renewal, which
# fails without writing (the new holder resumed the paused one's ACME order,
# so the thawed member is handed a certificate for the new holder's key), is
# taken as a lost lock (renewal_lock_lost): what the new holder stored is reloaded.
refused() { grep -q "event=commit_fenced.*issue_cert_$name" "${MEMBER_LOG[$paused]}" ||
  { grep -q "event=lock_lost lock=issue_cert_$name" "${MEMBER_LOG[$paused]}" &&
    grep -q "event=renewal_lock_lost .*name=$name" "${MEMBER_LOG[$paused]}"; }; }
check "the thawed member is refused: commit_fenced, or lock_lost and renewal_lock_lost" wait_for 40 refused
if grep -q "event=commit_fenced" "${MEMBER_LOG[$paused]}"; then
  echo "FIGURE fence_refusal=commit_fenced"; grep "event=commit_fenced" "${MEMBER_LOG[$paused]}" | head -n 3 || true
else
  echo "FIGURE fence_refusal=lock_lost_before_commit (commit_fenced not reached)"
  grep -E "event=(lock_lost|renewal_lock_lost)" "${MEMBER_LOG[$paused]}" | head -n 3 || true
fi
new_serial=""
for i in "${others[@]}"; do
  s=$(member_events "$i" renewed "$name" | tail -n 1 | grep -o 'serial=[0-9a-fA-F]*' | cut -d= -f2 || true)
  [ -n "$s" ] && new_serial=$s
done
stored_serial() { member_status_serials "${others[0]}" | awk -v n="$name" '$1 == n { print $2 }'; }
check "storage holds the new holder's certificate of $name ($new_serial)" test "$(stored_serial)" = "$new_serial"
check "the thawed member loads the new holder's certificate" \
  wait_for 90 bash -c "[ \"\$(grep -E 'event=(renewed|reloaded) .*name=$name ' '${MEMBER_LOG[$paused]}' | tail -n 1 | grep -o 'serial=[0-9a-fA-F]*')\" = 'serial=$new_serial' ]"
check "every stored set parses and its key matches" cluster_storage_intact
for i in 1 2 3; do check "member $i stops on SIGTERM with status 0" member_stop "$i"; done
finish
