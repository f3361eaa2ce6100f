#!/usr/bin/env bash
# Three members on a real etcd that is stopped mid-run, across the time the
# certificates fall due, and started again: the members say clearly that
# etcd is unreachable (naming the endpoint), keep running and serving (member
# 1's http-01 listener answers, the processes live), catch up once etcd is
# back (every name renewed, one issuance each), and storage is intact.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/etcd.bash"
source "$(dirname "$0")/cluster.bash"

pebble_start --validity 40 --nosleep
etcd_start
cluster_env etcd
export CLUSTER_LOCK_TTL=10s
for i in 1 2 3; do member_start "$i"; done
check "every one of the 12 names is obtained" wait_for 90 cluster_issued_at_least 1
due=$(cluster_next_due)
sleep $(( due - $(date +%s) > 3 ? due - $(date +%s) - 3 : 0 ))
etcd_stop
echo "etcd stopped 3 s before the first renewal falls due"
unreachable() { grep -q "etcd $ETCD_URL: " "${MEMBER_LOG[$1]}"; }
for i in 1 2 3; do
  check "member $i logs that etcd $ETCD_URL is unreachable" wait_for 30 unreachable "$i"
done
grep -h "etcd $ETCD_URL: " "${MEMBER_LOG[@]}" | head -n 2 || true
for i in 1 2 3; do check "member $i keeps running" kill -0 "${MEMBER_PID[$i]}"; done
check "member 1's http-01 listener still answers" \
  bash -c "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:$PEBBLE_HTTP_PORT/.well-known/acme-challenge/none | grep -q '^[1-5]'"
sleep 5
check "etcd starts again" etcd_start
check "the members catch up: every name is renewed" wait_for 100 cluster_issued_at_least 2
check "no name was issued twice in a round" test "$(cluster_duplicates)" -eq 0
echo "FIGURE duplicate_issuances=$(cluster_duplicates) (over $(cluster_issuances | wc -l) issuances, etcd down for the first renewals)"
check "every stored set parses and its key matches" cluster_storage_intact
expected=$(member_status_serials 1)
check "status --json lists the 12 certificates" test "$(grep -c . <<<"$expected")" -eq 12
for i in 2 3; do
  check "member $i's status --json shows the same serials" test "$(member_status_serials "$i")" = "$expected"
done
for i in 1 2 3; do check "member $i stops on SIGTERM with status 0" member_stop "$i"; done
finish
