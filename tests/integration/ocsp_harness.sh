#!/usr/bin/env bash
# The OCSP harness (ocsp.bash) itself, with reference clients only (lego for
# ACME, `openssl ocsp` and curl for OCSP, `openssl crl` for CRLs): Pebble puts
# the responder's URL into what it issues; `openssl ocsp`, signing with
# Pebble's intermediate, answers good for what Pebble issued (POST and GET),
# revoked (with time and reason) for what a test revokes and for what was
# revoked through ACME, and nothing once stopped; it listens on 127.0.0.1
# only; the fault servers answer garbage, oversized, slow, an HTTP error, or
# die mid-request; the CRL server serves a CRL made by crl_make that
# verifies against its CA and lists what it was told to.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/ocsp.bash"
command -v lego >/dev/null || { fail "lego is not installed (scripts/deps.sh installs it)"; finish; exit 1; }

check "ocsp_pebble_start: Pebble with ocspResponderURL, openssl ocsp as its intermediate" ocsp_pebble_start --nosleep
check "the responder listens on 127.0.0.1 only" \
  bash -c "ss -Hltn 'sport = :$OCSP_PORT' | awk '{print \$4}' | grep -qx '\\[::ffff:127.0.0.1\\]:$OCSP_PORT\\|127.0.0.1:$OCSP_PORT'"

legorun() {
  LEGO_CA_CERTIFICATES=$PEBBLE_CA_BUNDLE lego --server "$PEBBLE_DIR_URL" --accept-tos \
    --email harness@example.com --path "$WORK/lego" --http --http.port "127.0.0.1:$PEBBLE_HTTP_PORT" \
    -d "$1" "${@:2}" >"$WORK/lego-$1.out" 2>&1
}
check "lego obtains one.example.test" legorun one.example.test run
check "lego obtains two.example.test" legorun two.example.test run
one=$WORK/lego/certificates/one.example.test.crt two=$WORK/lego/certificates/two.example.test.crt
awk 'f<1{print} /END CERTIFICATE/{f++}' "$one" > "$WORK/one.pem"
awk 'f<1{print} /END CERTIFICATE/{f++}' "$two" > "$WORK/two.pem"
check "the certificates name the responder (Pebble's ocspResponderURL)" \
  test "$(openssl x509 -in "$WORK/one.pem" -noout -ocsp_uri)" = "$OCSP_URL"
check "the index learns both serials from Pebble (sync)" \
  wait_for 10 bash -c "[ \$(wc -l < '$OCSP_DIR/index.txt') -eq 2 ]"
check "openssl ocsp answers good for one (POST, verified against Pebble's root)" \
  test "$(ocsp_query "$WORK/one.pem")" = good
check "and good for two" test "$(ocsp_query "$WORK/two.pem")" = good
out=$(openssl ocsp -issuer "$OCSP_DIR/signer.pem" -cert "$WORK/one.pem" -url "$OCSP_URL" \
  -CAfile "$OCSP_DIR/root.pem" -no_nonce -resp_text 2>&1 || true)
this=$(sed -n 's/^ *This Update: //p' <<<"$out" | head -1); next=$(sed -n 's/^ *Next Update: //p' <<<"$out" | head -1)
check "nextUpdate is thisUpdate + $OCSP_NMIN min ($this .. $next)" \
  test $(( $(date -u -d "$next" +%s) - $(date -u -d "$this" +%s) )) -eq $((OCSP_NMIN * 60))
check "the response is signed by Pebble's intermediate itself" \
  bash -c "grep -q 'Responder Id: .*Pebble Intermediate CA' <<<'$out' || grep -q 'Responder Id' <<<'$out'"

# GET: the base64 request URL-encoded in the path
openssl ocsp -issuer "$OCSP_DIR/signer.pem" -cert "$WORK/one.pem" -no_nonce -reqout "$WORK/req.der" >/dev/null 2>&1
path=$(base64 -w0 "$WORK/req.der" | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g')
curl -sf -o "$WORK/get.der" "$OCSP_URL/$path" || true
check "GET with the request in the path is answered, and verifies good" \
  test "$(ocsp_check_staple "$WORK/get.der" "$WORK/one.pem")" = good
staple_invalid() { [[ "$(ocsp_check_staple "$1" "$2")" == invalid* ]]; }
query_invalid() { [[ "$(ocsp_query "$1")" == invalid* ]]; }
staple_not_good() { [ "$(ocsp_check_staple "$1" "$2")" != good ]; }
check "a stored response checked against the wrong certificate is not taken" \
  staple_not_good "$WORK/get.der" "$WORK/two.pem"

s1=$(cert_serial "$WORK/one.pem")
ocsp_revoke "$s1" keyCompromise
out=$(openssl ocsp -issuer "$OCSP_DIR/signer.pem" -cert "$WORK/one.pem" -url "$OCSP_URL" \
  -CAfile "$OCSP_DIR/root.pem" -no_nonce 2>&1 || true)
check "ocsp_revoke: the very next answer says revoked (the poke made the responder reload)" \
  test "$(ocsp_status_word "$out" "$WORK/one.pem")" = revoked
check "with reason keyCompromise and a revocation time" \
  bash -c "grep -q 'Reason: keyCompromise' <<<'$out' && grep -q 'Revocation Time' <<<'$out'"
check "the other certificate stays good" test "$(ocsp_query "$WORK/two.pem")" = good
check "an old good response is still good (a staple is what was signed)" \
  test "$(ocsp_check_staple "$WORK/get.der" "$WORK/one.pem")" = good

check "lego revokes two through ACME (reason superseded)" legorun two.example.test revoke --reason 4
check "the sync sees Pebble's revocation: two is revoked (superseded)" \
  wait_for 10 bash -c "openssl ocsp -issuer '$OCSP_DIR/signer.pem' -cert '$WORK/two.pem' -url '$OCSP_URL' -CAfile '$OCSP_DIR/root.pem' \
      -no_nonce 2>&1 | grep -q 'Reason: superseded'"

check "an unknown serial is answered unknown" \
  bash -c "openssl ocsp -issuer '$OCSP_DIR/signer.pem' -serial 0x77 -url '$OCSP_URL' -CAfile '$OCSP_DIR/root.pem' -no_nonce 2>&1 | grep -q ': unknown'"

ocsp_stop
check "ocsp_stop: nothing answers" query_invalid "$WORK/two.pem"
check "ocsp_start: answers again" ocsp_start
check "with the index as it was (two still revoked)" test "$(ocsp_query "$WORK/two.pem")" = revoked

# fault servers on the responder's port
check "ocsp_fault garbage" ocsp_fault garbage
code=$(curl -s -o "$WORK/g.der" -w '%{http_code}' --data-binary @"$WORK/req.der" -H 'Content-Type: application/ocsp-request' "$OCSP_URL/" || true)
check "garbage: HTTP 200 ($code) to a POST" test "$code" = 200
check "garbage: not an OCSP response" staple_invalid "$WORK/g.der" "$WORK/one.pem"
check "ocsp_fault huge 1048576" ocsp_fault huge 1048576
check "huge: a 1 MiB body" test "$(curl -s "$OCSP_URL/x" | wc -c)" -eq 1048576
check "ocsp_fault status 503" ocsp_fault status 503
check "status: HTTP 503" test "$(curl -s -o /dev/null -w '%{http_code}' "$OCSP_URL/x")" = 503
check "ocsp_fault slow 30" ocsp_fault slow 30
curl -s -o /dev/null --max-time 60 "$OCSP_URL/x" & slowpid=$!
sleep 1
ocsp_fault_kill
set +e; wait "$slowpid"; rc=$?; set -e
check "slow: a request in flight fails when the server dies mid-request (curl $rc)" test "$rc" -ne 0
check "the requests were counted" test "$(ocsp_requests)" -ge 8
ocsp_fault_stop
check "the responder comes back after the faults" ocsp_start
check "and answers as before" test "$(ocsp_query "$WORK/one.pem")" = revoked

# CRLs: an openssl CA of our own, a CRL listing one serial
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=harness CRL CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" >/dev/null 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=other CA" \
  -keyout "$WORK/other.key" -out "$WORK/other.pem" >/dev/null 2>&1
check "crl_make: a CRL listing 0a1b2c (keyCompromise) and 0d0e, nextUpdate in 30 s" \
  crl_make "$WORK/ca.pem" "$WORK/ca.key" "$WORK/listed.crl" 30 0a1b2c:keyCompromise 0d0e
check "crl_server_start" crl_server_start
crl_publish "$WORK/listed.crl"
curl -sf -o "$WORK/got.crl" "$CRL_URL" || true
check "the CRL server serves the published CRL byte for byte" cmp -s "$WORK/got.crl" "$WORK/listed.crl"
crltext=$(openssl crl -inform DER -in "$WORK/got.crl" -noout -text 2>&1)
check "it lists both serials, the first with its reason" \
  bash -c "grep -q 'Serial Number: 0A1B2C' <<<'$crltext' && grep -q 'Serial Number: 0D0E' <<<'$crltext' && grep -q 'Key Compromise' <<<'$crltext'"
check "it verifies against its CA" \
  bash -c "openssl crl -inform DER -in '$WORK/got.crl' -CAfile '$WORK/ca.pem' -noout 2>&1 | grep -q 'verify OK'"
check "and not against another CA" \
  bash -c "! openssl crl -inform DER -in '$WORK/got.crl' -CAfile '$WORK/other.pem' -noout 2>&1 | grep -q 'verify OK'"
lu=$(openssl crl -inform DER -in "$WORK/got.crl" -noout -lastupdate | cut -d= -f2)
nu=$(openssl crl -inform DER -in "$WORK/got.crl" -noout -nextupdate | cut -d= -f2)
check "nextUpdate = lastUpdate + 30 s" test $(( $(date -u -d "$nu" +%s) - $(date -u -d "$lu" +%s) )) -eq 30
crl_make "$WORK/ca.pem" "$WORK/ca.key" "$WORK/empty.crl" 30
crl_publish "$WORK/empty.crl"
check "a new CRL replaces it (nothing listed)" \
  bash -c "curl -sf '$CRL_URL' | openssl crl -inform DER -noout -text | grep -q 'No Revoked Certificates'"
check "a name that is not there is 404" test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CRL_PORT/none.crl")" = 404
check "the CRL server listens on 127.0.0.1 only" \
  bash -c "ss -Hltn 'sport = :$CRL_PORT' | awk '{print \$4}' | grep -qx '127.0.0.1:$CRL_PORT'"
finish
