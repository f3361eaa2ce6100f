#!/usr/bin/env bash
# The Pebble harness (pebble.bash) itself: both servers answer on this test's
# own ports, the root comes from the management API, validation is real (a
# reference client, lego, obtains a certificate through http-01 when it listens
# on Pebble's httpPort and is refused when it listens elsewhere), and a killed
# Pebble comes back on the same ports with a new root.
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
    -d "$2" run >"$WORK/lego-$2.out" 2>&1
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
pebble_stop
check "pebble_stop stops both servers" bash -c "! curl -s -o /dev/null '$CHALLTEST_MGMT/'"
finish
