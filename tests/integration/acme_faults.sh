#!/usr/bin/env bash
# certmaint.issuer.acme when things go wrong, against a real Pebble (real
# validation) and a stub rate-limiting CA:
#  - a failing validation (nothing listening on Pebble's httpPort; something
#    there answering the wrong key authorization): an error naming the name and
#    the challenge, the old certificate kept, the back-off respected;
#  - the daemon killed in the middle of an order: the restart resumes the order
#    from storage; Pebble sees no second order and issues once;
#  - a rateLimited problem with Retry-After: reported as acme:rateLimited with
#    the CA's detail, the retry no earlier than Retry-After.
# (Pebble not running at start: acme_faults_startup.sh, it waits out a back-off.)
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
command -v caddy >/dev/null || { fail "caddy is not installed (scripts/deps.sh installs it)"; finish; exit 1; }

pebble_start --nosleep
read -r closed_port listen_port stub_port _ <<<"$PEBBLE_SPARE_PORTS"
store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
mkdir -p "$CERTMAINT_DATA"

# policy FILE LISTEN_PORT [extra policy fields] — one certificate, v.example.test
policy() {
  cat > "$1" <<LUA
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = "$CERTMAINT_DATA" },
  issuer = certmaint.issuer.acme {
    directory = "${DIR_URL:-$PEBBLE_DIR_URL}",
    ca_bundle = "$PEBBLE_CA_BUNDLE",
    email = "${EMAIL:-ops@example.test}",
    challenges = { http01 = { listen = "127.0.0.1:$2" } },
  },
  certificates = { "${NAME:-v.example.test}" },
  renew_check_interval = "1s",
  ${3:-}
}
LUA
}
# contains LINE PATTERN...: every (case-insensitive) pattern is in LINE
contains() { local l=$1 p; shift; for p; do grep -qi -- "$p" <<<"$l" || return 1; done; }
serial_of() { openssl x509 -in "$1" -noout -serial 2>/dev/null | cut -d= -f2; }
crt=$store/v.example.test/v.example.test.crt

# --- the certificate the failures must keep
# another account than the failing renewals below use: Pebble puts an account's
# valid authorizations into its new orders, and these renewals must validate
EMAIL=keeper@example.test policy "$WORK/good.lua" "$PEBBLE_HTTP_PORT"
set +e; "$BIN" once "$WORK/good.lua" >"$WORK/good.out" 2>&1; rc=$?; set -e
check "certmaint obtains v.example.test (the certificate to keep)" bash -c "[ $rc -eq 0 ] && [ -s '$crt' ]"
old_serial=$(serial_of "$crt")

# --- validation fails: Pebble's httpPort closed (the daemon listens elsewhere)
policy "$WORK/closed.lua" "$closed_port" 'needs_renewal = function() return true end,'
log=$WORK/closed.log
orders0=$(pebble_orders)
"$BIN" run "$WORK/closed.lua" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "port closed: the renewal fails" wait_for 30 grep -q 'event=renew_failed' "$log"
line=$(grep -m1 'event=renew_failed' "$log" || true)
check "the error names the name and the challenge" contains "$line" v.example.test http-01
check "and says what Pebble saw (the connection refused)" contains "$line" "connection refused"
check "the job backs off (retry in 1m, certmagic's first interval)" \
  grep -q 'event=job_failed.*name=renew:v.example.test.*retry_in=1m' "$log"
orders1=$(pebble_orders)
sleep 8
check "no new order while backing off ($orders1 orders after 8 s)" test "$(pebble_orders)" -eq "$orders1"
check "only one order for the failed attempt" test "$orders1" -eq $((orders0 + 1))
check "the old certificate is kept" test "$(serial_of "$crt")" = "$old_serial"
set +e; "$BIN" status "$WORK/closed.lua" --json >"$WORK/status.json" 2>/dev/null; set -e
next=$(json_eval "$WORK/status.json" "v[1].serial and v[1].last_error:find('http-01', 1, true) and v[1].next_attempt or ''")
check "status shows the old certificate, the error and the next attempt a minute out ($next)" \
  bash -c "[ -n '$next' ] && [ \$(date -d '$next' +%s) -ge \$(( \$(date +%s) + 40 )) ]"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

# --- validation fails: something on Pebble's httpPort answers the wrong key authorization
cat > "$WORK/Caddyfile" <<CADDY
{
	admin off
	storage file_system $WORK/caddy-storage
	auto_https off
	http_port $PEBBLE_HTTP_PORT
}
http://:$PEBBLE_HTTP_PORT {
	respond "not-the-key-authorization" 200
}
CADDY
HOME=$WORK XDG_CONFIG_HOME=$WORK XDG_DATA_HOME=$WORK \
  caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
caddy_pid=$!; PIDS+=("$caddy_pid")
check "a wrong answer is served on Pebble's httpPort" \
  wait_for 10 bash -c "curl -s http://127.0.0.1:$PEBBLE_HTTP_PORT/.well-known/acme-challenge/x | grep -q not-the-key"
rm -f "$CERTMAINT_DATA"/certmaint/state/*.json  # the back-off above is not what this part tests
set +e; "$BIN" once "$WORK/closed.lua" >"$WORK/wrong.out" 2>&1; rc=$?; set -e
kill "$caddy_pid"; wait "$caddy_pid" 2>/dev/null || true
line=$(grep -m1 'event=renew_failed' "$WORK/wrong.out" || true)
check "wrong key authorization: once fails" test "$rc" -ne 0
check "the error names the name, the challenge and the mismatch" \
  contains "$line" v.example.test http-01 "key authorization .* did not match"
check "the old certificate is still kept" test "$(serial_of "$crt")" = "$old_serial"

# --- the daemon killed in the middle of an order: the restart resumes it.
# A holding proxy on Pebble's httpPort forwards to the daemon's listener (a
# spare port) but holds Pebble's validation requests until released: the order
# is open, its challenge being validated, when the daemon is killed.
lua_bg() { # SCRIPT ARGS...: a stub in the background (env execs lua5.4, so $! is it)
  env ${CERTMAINT_HOST_PRELOAD:+LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0} \
    lua5.4 "$SRC/tests/integration/stubs/$1" "${@:2}" 2>>"$WORK/stubs.err" &
  stub_pid=$!; PIDS+=("$stub_pid")
}
listening() { ss -Hltn | grep -q "127.0.0.1:$1 "; }
lua_bg holding_proxy.lua "$PEBBLE_HTTP_PORT" "$listen_port" "$WORK/release" "$WORK/proxy.log"
proxy_pid=$stub_pid
check "the holding proxy listens on Pebble's httpPort" wait_for 10 listening "$PEBBLE_HTTP_PORT"
export NAME=k.example.test
policy "$WORK/kill.lua" "$listen_port"
orders0=$(pebble_orders); issued0=$(pebble_issued)
order_file=$CERTMAINT_DATA/certmaint/acme/orders/$PEBBLE_ISSUER_KEY/k.example.test.json
"$BIN" run "$WORK/kill.lua" 2>"$WORK/kill1.log" &
pid=$!; PIDS+=("$pid")
check "Pebble's validation of k.example.test is in flight (held)" wait_for 20 grep -q 'held /.well-known/acme-challenge/' "$WORK/proxy.log"
check "the open order is kept in storage" test -s "$order_file"
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
check "the daemon is killed before a certificate is stored" test ! -e "$store/k.example.test/k.example.test.crt"
"$BIN" run "$WORK/kill.lua" 2>"$WORK/kill2.log" &
pid=$!; PIDS+=("$pid")
touch "$WORK/release"
check "the restarted daemon obtains the certificate" wait_for 30 test -s "$store/k.example.test/k.example.test.crt"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
check "it resumed the stored order" grep -q "event=acme_order_resumed name=k.example.test " "$WORK/kill2.log"
check "the held validation was answered by the restarted daemon" grep -q 'answered 200 /.well-known/acme-challenge/' "$WORK/proxy.log"
check "Pebble saw one order for it, not two" test "$(pebble_orders)" -eq $((orders0 + 1))
check "and issued once" test "$(pebble_issued)" -eq $((issued0 + 1))
check "the order's state is gone from storage once done" test ! -e "$order_file"
unset NAME

# --- rateLimited with Retry-After from a stub CA
retry_after=300
lua_bg ratelimited_ca.lua "$stub_port" "$retry_after" "$WORK/stub.log"
check "the stub CA answers its directory" wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$stub_port/dir"
DIR_URL=http://127.0.0.1:$stub_port/dir NAME=r.example.test policy "$WORK/limited.lua" "$PEBBLE_HTTP_PORT"
log=$WORK/limited.log
"$BIN" run "$WORK/limited.lua" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "rateLimited: the renewal fails" wait_for 20 grep -q 'event=renew_failed' "$log"
line=$(grep -m1 'event=renew_failed' "$log" || true)
check "reported as acme:rateLimited with the CA's detail" \
  contains "$line" "code=acme:rateLimited" "too many new orders"
check "the retry waits for Retry-After (5m), not certmagic's 1m" \
  grep -Eq 'event=job_failed.*name=renew:r.example.test.*retry_in=(4m5[0-9]|5m)' "$log"
sleep 5
check "one order attempt at the stub in the meantime" test "$(grep -c 'POST /order' "$WORK/stub.log")" -eq 1
set +e; "$BIN" status "$WORK/limited.lua" --json >"$WORK/status.json" 2>/dev/null; set -e
next=$(json_eval "$WORK/status.json" 'v[1].next_attempt or ""')
check "status: next attempt no earlier than Retry-After ($next)" \
  bash -c "[ -n '$next' ] && [ \$(date -d '$next' +%s) -ge \$(( \$(date +%s) + $retry_after - 15 )) ]"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
finish
