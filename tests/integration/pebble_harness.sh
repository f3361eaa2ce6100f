#!/usr/bin/env bash
# The Pebble harness (pebble.bash) itself: both servers answer on this test's
# own ports, the root comes from the management API, validation is real (a
# reference client, lego, obtains a certificate through http-01 when it listens
# on Pebble's httpPort and is refused when it listens elsewhere), and a killed
# Pebble comes back on the same ports with a new root; and the options: EAB
# required (lego refused without it, served with it), certificateValidityPeriod
# and ocspResponderURL show in the certificate.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
command -v lego >/dev/null || { fail "lego is not installed (scripts/deps.sh installs it)"; finish; exit 1; }

pebble_env
check "pebble_env exports a directory URL with nothing behind it yet" \
  bash -c "[ -n \"\$PEBBLE_DIR_URL\" ] && ! curl -s -o /dev/null --cacert \"\$PEBBLE_CA_BUNDLE\" \"\$PEBBLE_DIR_URL\""
check "pebble_start brings up Pebble and pebble-challtestsrv" pebble_start --nosleep
check "the directory answers over TLS trusting PEBBLE_CA_BUNDLE" \
  bash -c "curl -sf --cacert '$PEBBLE_CA_BUNDLE' '$PEBBLE_DIR_URL' | grep -q '\"newOrder\"'"
check "the directory does not answer a client that trusts nothing" \
  bash -c "! curl -sf -o /dev/null '$PEBBLE_DIR_URL'"
pebble_root > "$WORK/root.pem"
check "pebble_root prints a CA certificate" \
  bash -c "openssl x509 -in '$WORK/root.pem' -noout -text | grep -q 'CA:TRUE'"

legorun() {
  LEGO_CA_CERTIFICATES=$PEBBLE_CA_BUNDLE lego --server "$PEBBLE_DIR_URL" --accept-tos \
    --email harness@example.com --path "$WORK/lego" --http --http.port "127.0.0.1:$1" \
    -d "$2" "${@:3}" run >"$WORK/lego-$2.out" 2>&1
}
check "lego obtains a certificate through http-01 on PEBBLE_HTTP_PORT" legorun "$PEBBLE_HTTP_PORT" one.example.test
check "Pebble validated it over HTTP on PEBBLE_HTTP_PORT" grep -q "Attempting to validate w/ HTTP: http://one.example.test:$PEBBLE_HTTP_PORT/" "$PEBBLE_LOG"
check "Pebble logged one issuance" test "$(pebble_issued)" = 1
crt=$WORK/lego/certificates/one.example.test.crt
check "the chain verifies against Pebble's root" \
  bash -c "openssl verify -CAfile '$WORK/root.pem' -untrusted '$crt' '$crt' | grep -q ': OK'"
spare=${PEBBLE_SPARE_PORTS%% *}
set +e; legorun "$spare" two.example.test; rc=$?; set -e
check "lego listening on another port is refused: validation is real" \
  bash -c "[ $rc -ne 0 ] && [ \$(grep -c 'Issued certificate serial' '$PEBBLE_LOG') = 1 ]"

pebble_pause
check "a paused Pebble answers nothing" bash -c "! curl -s -o /dev/null --max-time 1 --cacert '$PEBBLE_CA_BUNDLE' '$PEBBLE_DIR_URL'"
pebble_resume
check "and answers again once resumed" curl -sf -o /dev/null --max-time 5 --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_DIR_URL"
old_root=$(cat "$WORK/root.pem")
pebble_kill
check "after pebble_kill the directory is gone" bash -c "! curl -s -o /dev/null --cacert '$PEBBLE_CA_BUNDLE' '$PEBBLE_DIR_URL'"
check "pebble_start again answers on the same directory URL" pebble_start
check "with a new root" bash -c "[ \"\$(curl -sf --cacert '$PEBBLE_CA_BUNDLE' '$PEBBLE_MGMT/roots/0')\" != '$old_root' ]"

# options: EAB required, short certificates, an OCSP responder URL
pebble_kill
hmac=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W
ocsp=http://127.0.0.1:${PEBBLE_SPARE_PORTS##* }
check "pebble_start --validity --eab --eab-required --ocsp" \
  pebble_start --nosleep --validity 60 --eab "kid-1:$hmac" --eab-required --ocsp "$ocsp"
check "the directory says an external account is required" \
  bash -c "curl -sf --cacert '$PEBBLE_CA_BUNDLE' '$PEBBLE_DIR_URL' | grep -q '\"externalAccountRequired\": *true'"
set +e; legorun "$PEBBLE_HTTP_PORT" three.example.test; rc=$?; set -e
check "lego without EAB is refused" bash -c "[ $rc -ne 0 ] && grep -qi 'external' '$WORK/lego-three.example.test.out'"
rm -rf "$WORK/lego"
check "lego with EAB (kid-1) obtains a certificate" \
  legorun "$PEBBLE_HTTP_PORT" three.example.test --eab --kid kid-1 --hmac "$hmac"
crt=$WORK/lego/certificates/three.example.test.crt
lifetime=$(( $(date -d "$(openssl x509 -in "$crt" -noout -enddate | cut -d= -f2)" +%s) - \
             $(date -d "$(openssl x509 -in "$crt" -noout -startdate | cut -d= -f2)" +%s) ))
check "it lives certificateValidityPeriod (60 s, got $lifetime)" test "$lifetime" -le 61 -a "$lifetime" -ge 59
check "and names the OCSP responder" bash -c "openssl x509 -in '$crt' -noout -ocsp_uri | grep -qx '$ocsp'"
pebble_stop
check "pebble_stop stops both servers" bash -c "! curl -s -o /dev/null '$CHALLTEST_MGMT/'"
finish
