#!/usr/bin/env bash
# The etcd harness (etcd.bash) itself: etcd answers on this test's own ports
# (never 2379), stores and ranges keys through the JSON gateway, counts the
# requests it handled, and keeps its data across a stop and a kill.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/etcd.bash"

etcd_env
check "etcd_env exports a client URL that is not the default port" \
  bash -c "[ -n '$ETCD_URL' ] && [ '${ETCD_URL##*:}' != 2379 ]"
check "nothing answers there before etcd_start" bash -c "! curl -s -o /dev/null --max-time 1 '$ETCD_URL/health'"
check "etcd_start brings it up healthy" etcd_start
check "two spare ports are left to the test" test "$(wc -w <<<"$PEBBLE_SPARE_PORTS")" -eq 2
put() { curl -sf -o /dev/null -d "{\"key\":\"$(etcd_b64 "$1")\",\"value\":\"$(etcd_b64 "$2")\"}" "$ETCD_URL/v3/kv/put"; }
check "a put through the JSON gateway" put /it/a "hello a"
put /it/b "hello b"; put /itx/c "not under /it/"
check "etcd_get reads it back" test "$(etcd_get /it/a)" = "hello a"
missing() { ! etcd_get "$1" >/dev/null; }
check "etcd_get of a missing key fails" missing /it/none
check "etcd_keys lists the range under a prefix" test "$(etcd_keys /it/ | tr '\n' ' ')" = "/it/a /it/b "
before=$(etcd_requests)
etcd_get /it/a >/dev/null; etcd_get /it/b >/dev/null
after=$(etcd_requests)
check "etcd_requests counts the gateway's requests ($before, then $after after two ranges)" \
  test "$after" -ge $((before + 2))

etcd_stop
check "after etcd_stop nothing answers" bash -c "! curl -s -o /dev/null --max-time 1 '$ETCD_URL/health'"
check "etcd_start again comes back on the same URL" etcd_start
check "with the data kept" test "$(etcd_get /it/b)" = "hello b"
etcd_pause
check "a paused etcd answers nothing" bash -c "! curl -s -o /dev/null --max-time 1 '$ETCD_URL/health'"
etcd_resume
check "and answers again once resumed" wait_for 5 etcd_healthy
etcd_kill
check "etcd_kill leaves it down" bash -c "! curl -s -o /dev/null --max-time 1 '$ETCD_URL/health'"
check "a restart after SIGKILL" etcd_start
check "still has the data" test "$(etcd_get /it/a)" = "hello a"
finish
