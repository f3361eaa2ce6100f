#!/usr/bin/env bash
# The live demo: installs what is missing, builds, then runs `certmaint run
# policies/local.lua` with 30-second certificates, printing the status table
# every 15 seconds while certificates are issued and renewed. Stops by itself
# after DEMO_SECONDS (default 90) with SIGTERM, as an operator would.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/deps.sh"
"$here/scripts/build.sh" "$here/build"
bin=$here/build/certmaint
data=$(mktemp -d /tmp/certmaint-demo.XXXXXX)
export CERTMAINT_DATA=$data CERTMAINT_LIFETIME=30s CERTMAINT_RENEW_CHECK=3s CERTMAINT_CLEAN_INTERVAL=20s
seconds=${DEMO_SECONDS:-90}

echo "== certmaint check policies/local.lua (what would happen, changing nothing)"
"$bin" check "$here/policies/local.lua" || true
echo
echo "== certmaint run policies/local.lua  (storage: $data, lifetime 30s, for ${seconds}s)"
"$bin" run "$here/policies/local.lua" 2>"$data.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
grep_events() { grep -E 'event=(obtained|renewed|reloaded|renew_failed|clean_deleted|hook_failed)' "$data.log" | sed 's/^/  /' || true; }
shown=0
for ((t = 15; t <= seconds; t += 15)); do
  sleep 15
  echo
  echo "-- after ${t}s: log events so far"
  total=$(grep_events | wc -l)
  grep_events | tail -n +$((shown + 1)); shown=$total
  echo "-- certmaint status"
  "$bin" status "$here/policies/local.lua"
done
kill -TERM $pid
wait $pid && rc=0 || rc=$?
trap - EXIT
echo
echo "== stopped (exit $rc): $(grep -c 'event=obtained' "$data.log") obtained, $(grep -c 'event=renewed' "$data.log") renewed, $(grep -c 'level=error' "$data.log") errors"
echo "   full log: $data.log   storage: $data"
