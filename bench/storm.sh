#!/usr/bin/env bash
# storm.sh - a renewal storm against real Pebble: N certificates (default
# 1,000) due at once under Let's Encrypt's default order budget, scaled in
# time so the figure comes in minutes: 300 new orders per account per 3 h
# becomes 300 per 3 h / SCALE, and 50 certificates per registered domain per
# week becomes 50 per week / SCALE (SCALE = 360 by default: 300 per 30 s, 50
# per 28 min). The names are spread over DOMAINS registered domains (default
# 40, 25 names each), so the per-domain limit is within reach but the account
# limit is what spreads the storm; DOMAINS=10 makes per-domain bind too.
#
#   [BIN=build/certmaint] [N=1000] [SCALE=360] [DOMAINS=40] [CONCURRENCY=8] bash bench/storm.sh
#
# Prints the orders in each window, the most in any window (from certmaint's
# ledger events and from Pebble's log), how many were refused, how many
# certificates were stored and the wall time; a line
# "STORM orders_per_window=<max> budget=<b> refused=<n> certificates=<n> seconds=<s>".
# Registered in no ctest.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export CERTMAINT_BIN=${BIN:-$SRC/build/certmaint} CERTMAINT_SOURCE_DIR=$SRC
N=${N:-1000} SCALE=${SCALE:-360} DOMAINS=${DOMAINS:-40} CONCURRENCY=${CONCURRENCY:-8}
[[ -x $CERTMAINT_BIN ]] || { echo "storm.sh: no certmaint binary at $CERTMAINT_BIN" >&2; exit 2; }
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/pebble.bash"

BUDGET=300 WINDOW=$(( 3 * 3600 / SCALE )) PER_DOMAIN=50 PER_DOMAIN_WINDOW=$(( 7 * 86400 / SCALE ))
export CERTMAINT_STORM_N=$N CERTMAINT_STORM_BUDGET=$BUDGET CERTMAINT_STORM_WINDOW=${WINDOW}s \
  CERTMAINT_STORM_PER_DOMAIN=$PER_DOMAIN CERTMAINT_STORM_PER_DOMAIN_WINDOW=${PER_DOMAIN_WINDOW}s \
  CERTMAINT_STORM_DOMAINS=$DOMAINS CERTMAINT_STORM_CONCURRENCY=$CONCURRENCY
echo "storm: $N certificates over $DOMAINS registered domains; budget $BUDGET orders per ${WINDOW}s," \
  "$PER_DOMAIN per domain per ${PER_DOMAIN_WINDOW}s (Let's Encrypt's limits / $SCALE); concurrency $CONCURRENCY"
pebble_start --nosleep
certs=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
log=$WORK/run.log
stored() { { find "$certs" -name '*.crt' 2>/dev/null || true; } | wc -l; }
start=$SECONDS
"$BIN" run "$POL/acme_storm.lua" 2>"$log" &
pid=$!; PIDS+=("$pid")
limit=$(( (N / BUDGET + 2) * WINDOW + 300 ))
while [ "$(stored)" -lt "$N" ] && [ $((SECONDS - start)) -lt "$limit" ]; do sleep 1; done
seconds=$((SECONDS - start))
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

# orders reserved in each window since the first
lua54 -e "
  local w, t0, bins = $WINDOW, nil, {}
  for l in io.lines('$log') do
    local at = l:match('event=order_budget_reserved .*at=([%d.]+)')
    if at then
      at = tonumber(at); t0 = t0 or at
      local k = math.floor((at - t0) / w) + 1
      bins[k] = (bins[k] or 0) + 1
    end
  end
  for k = 1, #bins do print(string.format('window %d (+%ds): %d orders', k, (k - 1) * w, bins[k] or 0)) end"
figures=$(lua54 "$SRC/tests/integration/storm_count.lua" "$WINDOW" "$PEBBLE_LOG" "$log")
echo "$figures"
eval "$figures"
refused=$(grep -c 'event=renew_failed\|rateLimited' "$log" || true)
waiting=$(grep -c 'event=renewals_waiting' "$log" || true)
errors=$(grep -c 'level=error' "$log" || true)
echo "renewals_waiting events: $waiting; error lines: $errors; Pebble issued: $(pebble_issued)"
echo "STORM orders_per_window=$pebble_max budget=$BUDGET refused=$refused certificates=$(stored) seconds=$seconds"
