#!/usr/bin/env bash
# certmaint.issuer.acme with the CA not running when the daemon starts: the
# obtain fails with an error naming the CA, backs off on certmagic's schedule
# (first retry after 1 minute, not sooner), and succeeds once Pebble is up.
# (~65 s: it waits out that first back-off. The other faults: acme_faults.sh.)
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_env   # ports and URLs only: nothing listens yet
store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
crt=$store/s.example.test/s.example.test.crt
mkdir -p "$CERTMAINT_DATA"
cat > "$WORK/policy.lua" <<LUA
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = "$CERTMAINT_DATA" },
  issuer = certmaint.issuer.acme {
    directory = "$PEBBLE_DIR_URL",
    ca_bundle = "$PEBBLE_CA_BUNDLE",
    email = "ops@example.test",
    challenges = { http01 = { listen = "127.0.0.1:$PEBBLE_HTTP_PORT" } },
  },
  certificates = { "s.example.test" },
  renew_check_interval = "1s",
}
LUA
log=$WORK/run.log
"$BIN" run "$WORK/policy.lua" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "with Pebble down the obtain fails" wait_for 30 grep -q 'event=renew_failed.*name=s.example.test' "$log"
line=$(grep -m1 'event=renew_failed' "$log" || true)
check "the error names the CA it could not reach" grep -q "127.0.0.1:${PEBBLE_DIR_URL#https://127.0.0.1:}" <<<"$line"
check "and the daemon backs off (retry in 1m)" grep -q 'event=job_failed.*name=renew:s.example.test.*retry_in=1m' "$log"
check "Pebble comes up" pebble_start --nosleep
check "the retry obtains the certificate once Pebble is up" wait_for 75 test -s "$crt"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
ts_of() { grep -m1 "$1" "$log" | sed 's/^ts=\([^ ]*\) .*/\1/'; }
failed_at=$(date -d "$(ts_of 'event=renew_failed')" +%s)
obtained_at=$(date -d "$(ts_of 'event=obtained')" +%s 2>/dev/null || echo 0)
check "the retry waited out the back-off ($((obtained_at - failed_at)) s after the failure)" \
  test $((obtained_at - failed_at)) -ge 58
check "one attempt failed, the next succeeded" test "$(grep -c 'event=renew_failed' "$log")" -eq 1
pebble_root > "$WORK/root.pem"
awk 'f<1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/leaf.pem"
awk 'f>=1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/rest.pem"
check "its chain verifies against Pebble's root" \
  openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/rest.pem" "$WORK/leaf.pem"
check "Pebble issued it once" test "$(pebble_issued)" -eq 1
finish
