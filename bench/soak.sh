#!/usr/bin/env bash
# bench/soak.sh [SECONDS] [LIFETIME]: run `certmaint run policies/local.lua` with
# short-lived certificates and print its RSS every 30 s, the renewals seen and
# whether any certificate ever expired. Memory must stay flat.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
lifetime=${2:-30s}
bin=${CERTMAINT_BIN:-$here/build/certmaint}
data=$(mktemp -d /tmp/certmaint-soak.XXXXXX)
export CERTMAINT_DATA=$data CERTMAINT_LIFETIME=$lifetime CERTMAINT_RENEW_CHECK=2s CERTMAINT_CLEAN_INTERVAL=30s
"$bin" run "$here/policies/local.lua" 2>"$data.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
expired=0
echo "t_seconds rss_kib lua_kib renewed"
for ((t = 0; t <= seconds; t += 30)); do
  [ $t -gt 0 ] && sleep 30
  # any stored certificate past its notAfter?
  for crt in "$data"/certificates/local/*/*.crt; do
    [ -e "$crt" ] || continue
    openssl x509 -in "$crt" -noout -checkend 0 >/dev/null || expired=$((expired + 1))
  done
  lua_kib=$(grep 'event=tick' "$data.log" | tail -1 | grep -o 'lua_kib=[0-9]*' | cut -d= -f2 || true)
  echo "$t $(rss) ${lua_kib:--} $(grep -c 'event=renewed' "$data.log" || true)"
done
kill -TERM $pid; wait $pid || true; trap - EXIT
echo "renewals=$(grep -c 'event=renewed' "$data.log") errors=$(grep -c 'level=error' "$data.log" || true) expired_seen=$expired"
rm -rf "$data" "$data.log"
