#!/usr/bin/env bash
# certmaint.issuer.acme against a real Pebble with real http-01 validation on
# certmaint's own listener (PEBBLE_HTTP_PORT): three certificates (one with
# three names) obtained, renewed twice by the window rule while the daemon
# runs (30 s certificates), every chain verified against Pebble's root, one
# issuance per certificate per round, Pebble's default 5% badNonce on.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --validity 30 --nosleep
export CERTMAINT_RENEW_CHECK=1s
policy=$POL/acme_http01.lua
log=$WORK/run.log
names="a.example.test b.example.test c.example.test"

mkdir -p "$CERTMAINT_DATA"
"$BIN" check "$policy" >"$WORK/check.out" 2>&1 || cat "$WORK/check.out"
check "certmaint check accepts the ACME policy" grep -q "policy ok: 3 certificates; issuer ACME $PEBBLE_DIR_URL" "$WORK/check.out"

"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "obtains the three certificates" wait_for 30 bash -c "[ \$(grep -c 'event=obtained' $log) -ge 3 ]"
check "renews each of them twice while running (30 s certificates)" \
  wait_for 60 bash -c "[ \$(grep -c 'event=renewed' $log) -ge 6 ]"
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0

store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
pebble_root > "$WORK/root.pem"
verified=0
for n in $names; do
  crt=$store/$n/$n.crt
  # the leaf, and the rest of the chain as untrusted intermediates
  awk 'f<1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/$n.leaf"
  awk 'f>=1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/$n.rest"
  if openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/$n.rest" "$WORK/$n.leaf" >/dev/null 2>&1; then
    verified=$((verified + 1))
  else
    openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/$n.rest" "$WORK/$n.leaf" || true
  fi
done
check "every stored chain verifies against Pebble's root (openssl verify)" test "$verified" -eq 3
sans=$(openssl x509 -in "$store/b.example.test/b.example.test.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2)
check "the multi-SAN certificate holds its three names" \
  bash -c "grep -q 'DNS:b.example.test' <<<'$sans' && grep -q 'DNS:www.b.example.test' <<<'$sans' && grep -q 'DNS:api.b.example.test' <<<'$sans'"
check "its key is stored 0600 beside it" test "$(stat -c %a "$store/b.example.test/b.example.test.key")" = 600

obtained=$(grep -c 'event=obtained' "$log" || true)
renewed=$(grep -c 'event=renewed' "$log" || true)
check "Pebble issued exactly one certificate per name per round ($(pebble_issued) = $obtained + $renewed)" \
  test "$(pebble_issued)" -eq $((obtained + renewed))
for n in $names; do
  r=$(grep 'event=renewed' "$log" | grep -c "name=$n " || true)
  check "$n was renewed in at least two rounds ($r)" test "$r" -ge 2
done
check "Pebble really validated over HTTP" grep -q "Attempting to validate w/ HTTP" "$PEBBLE_LOG"
check "no job failed (badNonce and everything else handled inside the flow)" \
  bash -c "! grep -q 'event=job_failed\|level=error' $log"

acct=$CERTMAINT_DATA/acme/$PEBBLE_ISSUER_KEY/users/ops@example.test
check "the account is where certmagic keeps it (users/<email>/<user>.json + .key)" \
  test -s "$acct/ops.json" -a -s "$acct/ops.key"
check "the account key is 0600" test "$(stat -c %a "$acct/ops.key")" = 600
acct_state=$(json_eval "$acct/ops.json" 'v.status .. " " .. tostring(tostring(v.location):match("^https://"))')
check "the account JSON has the account URL (location) and status ($acct_state)" test "$acct_state" = "valid https://"
check "one account was registered, and reused by every order" \
  test "$(grep -c 'event=acme_account_registered' "$log")" -eq 1
check "no order is left open in storage" \
  bash -c "[ -z \"\$(ls -A $CERTMAINT_DATA/certmaint/acme/orders/$PEBBLE_ISSUER_KEY 2>/dev/null)\" ]"

# a second run reuses the stored account (no new registration) and the certificates
log2=$WORK/once.log
"$BIN" once "$policy" 2>"$log2" || true
check "a restart registers no new account" bash -c "! grep -q event=acme_account_registered $log2"
finish
