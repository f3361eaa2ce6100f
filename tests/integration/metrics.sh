#!/usr/bin/env bash
# Prometheus metrics of a running daemon against real Pebble: `certmaint run`
# with policy.metrics.listen obtains three certificates over real http-01;
# curl scrapes /metrics and every certificate's expiry, notBefore and renewal
# due time equal `certmaint status --json`'s, the count is the status rows',
# the ACME finalize count is Pebble's issuance count; the node_exporter
# textfile (0644, rewritten after each pass) says the same; garbage, oversized
# and slow requests on the metrics port leave the daemon serving; a
# non-loopback listen address is refused naming metrics.listen.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --nosleep
read -r metrics_port _ <<<"$PEBBLE_SPARE_PORTS"
export METRICS_LISTEN=127.0.0.1:$metrics_port METRICS_TEXTFILE=$WORK/textfile/certmaint.prom
export METRICS_DEPLOY=$WORK/deploy
mkdir -p "$CERTMAINT_DATA" "$WORK/textfile" "$METRICS_DEPLOY"
policy=$POL/acme_metrics.lua
url=http://$METRICS_LISTEN/metrics
log=$WORK/run.log
compare=$SRC/tests/integration/metrics_compare.lua

# the loopback rule, before anything runs
sed 's|metrics = { listen = os.getenv("METRICS_LISTEN")|metrics = { listen = "0.0.0.0:9464"|' "$policy" > "$WORK/remote.lua"
set +e; "$BIN" check "$WORK/remote.lua" >"$WORK/remote.out" 2>&1; rc=$?; set -e
check "a non-loopback metrics.listen is refused (exit 2)" test "$rc" -eq 2
check "the refusal names metrics.listen and allow_remote" \
  bash -c "grep -q 'metrics.listen' '$WORK/remote.out' && grep -q 'not a loopback address' '$WORK/remote.out' && grep -q 'allow_remote' '$WORK/remote.out'"

"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "the daemon listens for scrapes" wait_for 20 grep -q "event=metrics_listening listen=$METRICS_LISTEN" "$log"
check "obtains the three certificates" wait_for 60 bash -c "[ \$(grep -c 'event=obtained' $log) -ge 3 ]"
check "and deploys them" wait_for 30 bash -c "[ \$(grep -c 'event=deployed' $log) -ge 3 ]"
# a renew pass that ended after the third certificate was obtained and deployed
n=$(grep -c 'event=tick.*kind=renew' "$log" || true)
check "a renew pass completes after that" wait_for 20 bash -c "[ \$(grep -c 'event=tick.*kind=renew' $log) -gt $n ]"

curl -sf -D "$WORK/scrape.headers" -o "$WORK/scrape.txt" "$url"
"$BIN" status "$policy" --json >"$WORK/status.json"
check "the scrape is text format 0.0.4" grep -qi '^content-type: text/plain; version=0.0.4' "$WORK/scrape.headers"
set +e; out=$(lua54 "$compare" "$WORK/status.json" "$WORK/scrape.txt"); rc=$?; set -e
echo "$out"
check "the scrape agrees with certmaint status --json (expiry, notBefore, renewal due, count, results)" test "$rc" -eq 0
finalized=$(sed -n 's/.*acme_finalize_2xx=\([0-9]*\).*/\1/p' <<<"$out")
orders=$(sed -n 's/.*acme_order_2xx=\([0-9]*\).*/\1/p' <<<"$out")
check "ACME finalize requests counted = Pebble's issuances ($finalized = $(pebble_issued))" test "$finalized" -eq "$(pebble_issued)"
check "ACME newOrder requests counted = Pebble's orders ($orders = $(pebble_orders))" test "$orders" -eq "$(pebble_orders)"
check "each certificate's obtain and deploy succeeded (1)" \
  bash -c "[ \$(grep -Ec '^certmaint_certificate_last_(renewal|deploy)_success\\{.*\\} 1\$' '$WORK/scrape.txt') -eq 6 ]"
check "a renew pass was counted" \
  bash -c "grep -Eq '^certmaint_pass_duration_seconds_count\\{kind=\"renew\"\\} [1-9]' '$WORK/scrape.txt'"
check "the last renew pass failed nothing" grep -q '^certmaint_pass_last_count{kind="renew",count="failed"} 0$' "$WORK/scrape.txt"
check "the Lua heap is reported" grep -Eq '^certmaint_lua_memory_bytes [1-9][0-9]{5,}$' "$WORK/scrape.txt"

# the textfile: written after each pass, atomically, readable by node_exporter
check "the textfile is written" wait_for 10 test -s "$METRICS_TEXTFILE"
check "the textfile is 0644" test "$(stat -c %a "$METRICS_TEXTFILE")" = 644
check "no temp file is left beside it" test "$(ls -A "$WORK/textfile" | wc -l)" -eq 1
set +e; out=$(lua54 "$compare" "$WORK/status.json" "$METRICS_TEXTFILE"); rc=$?; set -e
echo "textfile: $out"
check "the textfile agrees with certmaint status --json" test "$rc" -eq 0
before=$(stat -c %Y.%N "$METRICS_TEXTFILE" 2>/dev/null || stat -c %Y "$METRICS_TEXTFILE")
check "the textfile is rewritten by the next passes" \
  wait_for 10 bash -c "[ \"\$(stat -c %Y.%N '$METRICS_TEXTFILE')\" != '$before' ]"

# hostile clients on the metrics port
head -c 200000 /dev/urandom > "$WORK/garbage"
for i in 1 2 3; do
  timeout 15 bash -c "cat '$WORK/garbage' > /dev/tcp/127.0.0.1/$metrics_port" 2>/dev/null || true
done
# a head far past the 8 KiB bound, one header at a time
{ printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n'; for i in $(seq 1 2000); do printf 'X-Fill-%d: %s\r\n' "$i" "$(head -c 60 /dev/zero | tr '\0' a)"; done; printf '\r\n'; } > "$WORK/big-head"
timeout 15 bash -c "cat '$WORK/big-head' > /dev/tcp/127.0.0.1/$metrics_port" 2>/dev/null || true
# a path past the bound, a POST with a body, an unknown method, a slow client left open
long=$(head -c 10000 /dev/zero | tr '\0' a)
code_long=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$METRICS_LISTEN/$long" || true)
code_post=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --data-binary @"$WORK/garbage" "$url" || true)
code_path=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$METRICS_LISTEN/secret" || true)
check "an oversized path is refused ($code_long)" bash -c "[ '$code_long' = 414 ] || [ '$code_long' = 431 ] || [ '$code_long' = 400 ] || [ '$code_long' = 000 ]"
check "a POST with a body gets 413 ($code_post)" bash -c "[ '$code_post' = 413 ] || [ '$code_post' = 000 ]"
check "another path gets 404 ($code_path)" test "$code_path" = 404
# slow clients: a few (under the cap of 16) do not stop a scrape; a flood
# past the cap is closed at once, and holds nothing past the 10 s deadline
slow=()
for i in $(seq 1 8); do exec {fd}<>/dev/tcp/127.0.0.1/"$metrics_port"; printf 'GET /metr' >&$fd; slow+=("$fd"); done
check "the daemon is alive after the hostile clients" kill -0 "$pid"
check "and answers a scrape at once with 8 slow clients open" \
  bash -c "curl -sf --max-time 5 -o '$WORK/scrape2.txt' '$url' && grep -q '^certmaint_certificates 3\$' '$WORK/scrape2.txt'"
for i in $(seq 1 40); do exec {fd}<>/dev/tcp/127.0.0.1/"$metrics_port" || true; slow+=("$fd"); done
check "after a flood of 48 idle connections it answers again within their deadline" \
  wait_for 20 bash -c "curl -sf --max-time 5 -o /dev/null '$url'"
for fd in "${slow[@]}"; do exec {fd}>&- || true; done

kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0
check "the metrics port is closed on stop" bash -c "! curl -s --max-time 2 -o /dev/null '$url'"
check "no error line in the whole run" bash -c "! grep -q 'level=error' '$log'"
grep 'level=error' "$log" | head -5 || true

# certmaint once writes the textfile after its passes too
rm -f "$METRICS_TEXTFILE"
"$BIN" once "$policy" >"$WORK/once.out" 2>"$WORK/once.log"
check "certmaint once writes the textfile" test -s "$METRICS_TEXTFILE"
set +e; out=$(lua54 "$compare" "$WORK/status.json" "$METRICS_TEXTFILE"); rc=$?; set -e
echo "once: $out"
check "and it agrees with status --json" test "$rc" -eq 0
check "with one pass of each kind counted" \
  bash -c "[ \$(grep -Ec '^certmaint_pass_duration_seconds_count\\{kind=\"(renew|ocsp|clean)\"\\} 1\$' '$METRICS_TEXTFILE') -eq 3 ]"
check "once serves no endpoint" bash -c "! grep -q event=metrics_listening '$WORK/once.log'"
finish
