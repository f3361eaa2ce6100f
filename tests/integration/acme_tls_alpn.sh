#!/usr/bin/env bash
# certmaint.issuer.acme against a real Pebble with real tls-alpn-01 validation
# (RFC 8737) on certmaint's own in-loop TLS responder (PEBBLE_TLS_PORT): two
# certificates (one with two names) obtained by `certmaint once`, every chain
# verified against Pebble's root, the responder counting Pebble's handshakes
# (Pebble's log does not name the challenge type), its port closed afterwards.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --nosleep
policy=$POL/acme_tls_alpn01.lua
log=$WORK/once.log
mkdir -p "$CERTMAINT_DATA"

"$BIN" once "$policy" 2>"$log" || { echo "certmaint once failed:"; tail -30 "$log"; }
check "obtains both certificates over tls-alpn-01" test "$(grep -c 'event=obtained' "$log")" -eq 2
check "the responder listened on Pebble's tlsPort" \
  grep -q "event=acme_tls_alpn01_listening listen=127.0.0.1:$PEBBLE_TLS_PORT" "$log"

store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
pebble_root > "$WORK/root.pem"
verified=0
for n in t.example.test u.example.test; do
  crt=$store/$n/$n.crt
  awk 'f<1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/$n.leaf"
  awk 'f>=1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/$n.rest"
  if openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/$n.rest" "$WORK/$n.leaf" >/dev/null 2>&1; then
    verified=$((verified + 1))
  fi
done
check "both chains verify against Pebble's root (openssl verify)" test "$verified" -eq 2
sans=$(openssl x509 -in "$store/u.example.test/u.example.test.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2)
check "the two-name certificate holds both names" \
  bash -c "grep -q 'DNS:u.example.test' <<<'$sans' && grep -q 'DNS:www.u.example.test' <<<'$sans'"
closed=$(grep 'event=acme_tls_alpn01_closed' "$log" | tail -1)
handshakes=$(sed -n 's/.* handshakes=\([0-9]*\).*/\1/p' <<<"$closed")
check "Pebble validated the three names through TLS handshakes with the responder ($handshakes)" \
  test "${handshakes:-0}" -ge 3
check "and refused none of them" grep -q ' refused=0 ' <<<"$closed "
check "Pebble never validated over HTTP or DNS" bash -c "! grep -qi 'validate w/ HTTP\|validate w/ DNS' '$PEBBLE_LOG'"
check "Pebble issued exactly two certificates" test "$(pebble_issued)" -eq 2
check "nothing failed" bash -c "! grep -q 'event=job_failed\|level=error' $log"
check "the responder's port is closed after the run" \
  bash -c "! ss -Hltn 'sport = :$PEBBLE_TLS_PORT' | grep -q LISTEN"
finish
