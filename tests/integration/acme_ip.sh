#!/usr/bin/env bash
# An IP-address identifier (RFC 8738) obtained from a real Pebble over http-01:
# the order carries {type = "ip"}, Pebble validates the address itself, and the
# certificate holds it as an iPAddress SAN (no DNS name).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --nosleep
policy=$POL/acme_ip.lua
log=$WORK/once.log
mkdir -p "$CERTMAINT_DATA"

"$BIN" once "$policy" 2>"$log" || { echo "certmaint once failed:"; tail -30 "$log"; }
check "obtains the certificate for 127.0.0.1" test "$(grep -c 'event=obtained' "$log")" -eq 1
crt=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY/127.0.0.1/127.0.0.1.crt
sans=$(openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2)
check "its SAN is the address, as an IP address ($sans)" grep -q 'IP Address:127.0.0.1' <<<"$sans"
check "and no DNS name" bash -c "! grep -q 'DNS:' <<<'$sans'"
pebble_root > "$WORK/root.pem"
awk 'f<1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/leaf"
awk 'f>=1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/rest"
check "the chain verifies against Pebble's root, for the address" \
  openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/rest" -verify_ip 127.0.0.1 "$WORK/leaf"
check "Pebble validated over HTTP" grep -q "Attempting to validate w/ HTTP" "$PEBBLE_LOG"
check "Pebble issued one certificate" test "$(pebble_issued)" -eq 1
"$BIN" status "$policy" >"$WORK/status.out" 2>&1 || true
check "status shows it" grep -q '^127.0.0.1 ' "$WORK/status.out"
finish
