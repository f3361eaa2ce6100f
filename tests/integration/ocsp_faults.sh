#!/usr/bin/env bash
# OCSP responder faults, against the daemon (`certmaint run`, 1 s OCSP ticks,
# 2 s fetch timeout) with staples from a real `openssl ocsp` for Pebble's
# certificates (60 s spans, refreshed from 30 s on): once the staples are due
# the responder answers garbage, then an oversized answer, then HTTP 503,
# then too slowly, then dies with a request in flight, then is gone. Every
# failure is an error naming the responder's URL and why, and the staples
# stay (stored, deployed, in status) until their nextUpdate; then they are
# taken off with a clear error, and their deployed files removed. The responder back: good staples again. The
# daemon never stops. Staple output here is the split layout (nginx's
# ssl_stapling_file <dir>/<name>/ocsp.der).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/ocsp.bash"

ocsp_pebble_start --nosleep
export CERTMAINT_DEPLOY_DIR=$WORK/deploy CERTMAINT_DEPLOY_LAYOUT=split CERTMAINT_OCSP_CHECK=1s CERTMAINT_OCSP_TIMEOUT=2s
policy=$POL/ocsp_pebble.lua
log=$WORK/run.log
names="a.ocsp.test b.ocsp.test c.ocsp.test"
store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
mkdir -p "$CERTMAINT_DATA" "$CERTMAINT_DEPLOY_DIR"

leaf() { awk 'f<1{print} /END CERTIFICATE/{f++}' "$store/$1/$1.crt" > "$WORK/$1.leaf"; echo "$WORK/$1.leaf"; }
staple_file() {
  echo "$CERTMAINT_DATA/$(lua54 -e "local keys = require 'certmaint.keys'
    local f = assert(io.open('$store/$1/$1.crt', 'rb')); local pem = f:read('a'); f:close()
    print(keys.ocsp('$1', keys.fast_hash(pem)))")"
}
logged() { grep "event=$1" "$2" | grep -Eq "name=${3//./\\.}( |$)${4:+.*$4}"; }
failures() { grep -c 'event=staple_fetch_failed' "$log" || true; }
# a staple_fetch_failed line after the first N of them, naming the URL, with a code matching CODE_RE
failed_since() { # N CODE_RE
  tail -n +1 "$log" | grep 'event=staple_fetch_failed' | tail -n +$(($1 + 1)) |
    grep -F "url=$OCSP_URL" | grep -Eq "code=($2)( |$)"
}
status_json() { "$BIN" status "$policy" --json > "$WORK/status.json" 2>"$WORK/status.err"; }
good_rows() {
  json_eval "$WORK/status.json" '(function() local n = 0
    for _, r in ipairs(v) do if type(r.ocsp) == "table" and r.ocsp.status == "good" then n = n + 1 end end
    return n end)()'
}
staple_rows() {
  json_eval "$WORK/status.json" '(function() local n = 0
    for _, r in ipairs(v) do if type(r.ocsp) == "table" then n = n + 1 end end return n end)()'
}
alive() { kill -0 "$pid" 2>/dev/null; }

"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "obtains the three certificates" wait_for 30 bash -c "[ \$(grep -c 'event=obtained' $log) -ge 3 ]"
for n in $names; do
  check "$n gets a good staple" wait_for 30 logged staple_updated "$log" "$n" "status=good"
done
for n in $names; do
  cp "$(staple_file "$n")" "$WORK/$n.staple"
  check "$n: deployed as $n/ocsp.der (split layout), the stored DER" \
    wait_for 10 cmp -s "$WORK/$n.staple" "$CERTMAINT_DEPLOY_DIR/$n/ocsp.der"
done
next_update=$(grep 'event=staple_updated' "$log" | grep -o 'next_update=[^ ]*' | sort | head -1 | cut -d= -f2)
expires=$(date -u -d "$next_update" +%s)

# garbage: served from the staple's refresh time on (half its span)
n0=$(failures)
ocsp_fault garbage
check "garbage: an error naming the URL once the staples are due (code parse)" \
  wait_for 45 failed_since "$n0" "parse|verify|[a-z]+"
grep 'event=staple_fetch_failed' "$log" | tail -n 1
check "the error says the staple is kept until its nextUpdate" \
  bash -c "grep 'event=staple_fetch_failed' '$log' | tail -n 1 | grep -q 'kept_until='"
for n in $names; do
  check "$n: the stored staple is the same one" cmp -s "$WORK/$n.staple" "$(staple_file "$n")"
  check "$n: and still deployed" cmp -s "$WORK/$n.staple" "$CERTMAINT_DEPLOY_DIR/$n/ocsp.der"
done
status_json
check "status --json still shows the three good staples" test "$(good_rows)" = 3
check "the OCSP tick counts them kept" \
  bash -c "grep 'event=tick' '$log' | grep 'kind=ocsp' | tail -n 1 | grep -Eq ' kept=[1-9]'"

n0=$(failures)
ocsp_fault huge 1048576
check "an answer over max_response_size (1 MiB > 65536): error code toobig" wait_for 15 failed_since "$n0" toobig

n0=$(failures)
ocsp_fault status 503
check "HTTP 503: error code http" wait_for 15 failed_since "$n0" http

n0=$(failures)
ocsp_fault slow 30
check "an answer slower than ocsp.timeout (2 s): error code timeout" wait_for 20 failed_since "$n0" timeout

n0=$(failures)
ocsp_fault slow 30
held=$(grep -c '^slow ' "$OCSP_DIR/fault.log" || true)
check "a request reaches the slow responder" \
  wait_for 10 bash -c "[ \$(grep -c '^slow ' '$OCSP_DIR/fault.log') -gt $held ]"
ocsp_fault_kill
check "the responder dies mid-request: an error naming the URL" wait_for 15 failed_since "$n0" "[a-z]+"
check "the daemon runs on" alive

n0=$(failures)
port_closed() { ! ocsp_listening "$OCSP_PORT" && ! curl -s -o /dev/null --max-time 2 "$OCSP_URL/"; }
check "nothing listens now" port_closed
check "the responder gone: an error naming the URL" wait_for 15 failed_since "$n0" "[a-z]+"
if [ "$(date +%s)" -lt "$expires" ]; then
  for n in $names; do
    check "$n: before nextUpdate ($next_update) the staple is still deployed" \
      cmp -s "$WORK/$n.staple" "$CERTMAINT_DEPLOY_DIR/$n/ocsp.der"
  done
else
  fail "the faults took longer than the staples' span: the checks before nextUpdate could not run"
fi

for n in $names; do
  check "$n: after nextUpdate the staple is taken off with an error (staple_expired)" \
    wait_for 90 logged staple_expired "$log" "$n"
done
check "the error names the URL and the nextUpdate that passed" \
  bash -c "grep 'event=staple_expired' '$log' | head -1 | grep -F 'url=$OCSP_URL' | grep -q 'next_update='"
for n in $names; do
  check "$n: and removed where nginx reads it ($n/ocsp.der): an expired staple is never served" \
    wait_for 10 test ! -e "$CERTMAINT_DEPLOY_DIR/$n/ocsp.der"
done
check "the tick counts them removed" \
  bash -c "grep 'event=tick' '$log' | grep 'kind=ocsp' | grep -Eq ' removed=[1-9]'"
status_json
check "status --json shows no staple now" test "$(staple_rows)" = 0
check "the daemon still runs" alive

ocsp_start
for n in $names; do
  check "$n: the responder back, a good staple again" \
    wait_for 30 bash -c "grep 'event=staple_updated' '$log' | grep -E 'name=${n//./\\.}( |$)' | tail -n 1 | grep -q 'status=good' && \
      [ \$(grep 'event=staple_updated' '$log' | grep -cE 'name=${n//./\\.}( |$)') -ge 2 ]"
  check "$n: deployed again, verifying good" \
    wait_for 10 bash -c "! cmp -s '$WORK/$n.staple' '$CERTMAINT_DEPLOY_DIR/$n/ocsp.der' && \
      openssl ocsp -respin '$CERTMAINT_DEPLOY_DIR/$n/ocsp.der' -issuer '$OCSP_DIR/signer.pem' -cert '$(leaf "$n")' \
        -CAfile '$OCSP_DIR/root.pem' -no_nonce 2>&1 | grep -q ': good'"
done
status_json
check "status --json: three good staples" test "$(good_rows)" = 3

kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0
check "every error logged was a staple fetch failure or expiry, naming the URL" \
  bash -c "! grep 'level=error' '$log' | grep -v 'event=staple_fetch_failed \|event=staple_expired ' | grep -q . && \
    ! grep 'level=error' '$log' | grep -vqF 'url=$OCSP_URL'"
grep 'level=error' "$log" | grep -v 'event=staple_fetch_failed \|event=staple_expired ' | head -5 || true
check "no certificate was replaced (Pebble issued three)" test "$(pebble_issued)" -eq 3
finish
