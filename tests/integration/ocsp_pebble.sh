#!/usr/bin/env bash
# OCSP stapling and revocation against a real Pebble (ocspResponderURL set)
# and a real `openssl ocsp` signing as Pebble's intermediate (ocsp.bash):
# `certmaint run` obtains three certificates and every one gets a verified
# good staple, stored under certmagic's key (ocsp/<name>-<fast hash of the
# chain>), shown by `status --json`, deployed beside the HAProxy PEM as
# <name>.pem.ocsp (DER equal to the stored one); fresh staples are not
# fetched again; a chain certmaint does not manage (obtained by lego), named
# in ocsp.staple_files, gets its staple beside it as <path>.ocsp and is
# never renewed; the responder marks one revoked -> the next OCSP pass sees
# it and replaces the certificate (a new serial from Pebble, the same key:
# reuse_key, reason superseded) and the new one gets a good staple, deployed
# in place of the old. Then `certmaint revoke --reason 1` (keyCompromise):
# revoked at Pebble and so at the responder, replaced with a new key even
# under reuse_key, the old key set aside; `certmaint once` staples the new
# certificate and takes the others' staples from storage.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/ocsp.bash"

ocsp_pebble_start --nosleep
export CERTMAINT_DEPLOY_DIR=$WORK/deploy CERTMAINT_DEPLOY_LAYOUT=haproxy CERTMAINT_OCSP_CHECK=1s
policy=$POL/ocsp_pebble.lua
log=$WORK/run.log
names="a.ocsp.test b.ocsp.test c.ocsp.test"
store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
mkdir -p "$CERTMAINT_DATA" "$CERTMAINT_DEPLOY_DIR"

leaf() { awk 'f<1{print} /END CERTIFICATE/{f++}' "$store/$1/$1.crt" > "$WORK/$1.leaf"; echo "$WORK/$1.leaf"; }
# certmagic's staple key of NAME's stored chain, as a path in the file storage
staple_file() {
  echo "$CERTMAINT_DATA/$(lua54 -e "local keys = require 'certmaint.keys'
    local f = assert(io.open('$store/$1/$1.crt', 'rb')); local pem = f:read('a'); f:close()
    print(keys.ocsp('$1', keys.fast_hash(pem)))")"
}
logged() { grep "event=$1" "$2" | grep -Eq "name=${3//./\\.}( |$)${4:+.*$4}"; }
count_logged() { grep "event=$1" "$2" | grep -Ec "${3:-.}" || true; }
status_json() { "$BIN" status "$policy" --json > "$WORK/status.json" 2>"$WORK/status.err"; }
good_rows() {
  json_eval "$WORK/status.json" '(function() local n = 0
    for _, r in ipairs(v) do if r.managed and type(r.ocsp) == "table" and r.ocsp.status == "good" then n = n + 1 end end
    return n end)()'
}
row_field() { # NAME LUA-EXPR-OVER-r
  json_eval "$WORK/status.json" "(function() for _, r in ipairs(v) do
    if r.names[1] == '$1' then return $2 end end return 'no row' end)()"
}

# a certificate certmaint does not manage, from a reference client
LEGO_CA_CERTIFICATES=$PEBBLE_CA_BUNDLE lego --server "$PEBBLE_DIR_URL" --accept-tos --email other@example.test \
  --path "$WORK/lego" --http --http.port "127.0.0.1:$PEBBLE_HTTP_PORT" -d other.ocsp.test run >"$WORK/lego.out" 2>&1 ||
  { cat "$WORK/lego.out"; fail "lego could not obtain other.ocsp.test"; }
export CERTMAINT_STAPLE_FILE=$WORK/lego/certificates/other.ocsp.test.crt
awk 'f<1{print} /END CERTIFICATE/{f++}' "$CERTMAINT_STAPLE_FILE" > "$WORK/other.leaf"

"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "obtains the three certificates" wait_for 30 bash -c "[ \$(grep -c 'event=obtained' $log) -ge 3 ]"
for n in $names; do
  check "$n gets a good staple (staple_updated status=good)" wait_for 30 logged staple_updated "$log" "$n" "status=good"
done

for n in $names; do
  sf=$(staple_file "$n")
  check "$n: the staple is stored under certmagic's key ($(basename "$sf"))" test -s "$sf"
  check "$n: the stored staple verifies good for the certificate (openssl ocsp -respin)" \
    test "$(ocsp_check_staple "$sf" "$(leaf "$n")")" = good
  check "$n: it is deployed as $n.pem.ocsp, the same DER" \
    wait_for 10 cmp -s "$sf" "$CERTMAINT_DEPLOY_DIR/$n.pem.ocsp"
done
check "the staple-only file gets its staple beside it ($(basename "$CERTMAINT_STAPLE_FILE").ocsp)" \
  wait_for 30 test -s "$CERTMAINT_STAPLE_FILE.ocsp"
check "which verifies good for that certificate" \
  test "$(ocsp_check_staple "$CERTMAINT_STAPLE_FILE.ocsp" "$WORK/other.leaf")" = good
check "status --json while the daemon runs" status_json
check "status --json shows a good staple on the three managed rows" test "$(good_rows)" = 3
check "with next_update after this_update (RFC 3339)" \
  test "$(row_field a.ocsp.test 'tostring(r.ocsp.next_update > r.ocsp.this_update and r.ocsp.next_update:match("^%d%d%d%d%-%d%d%-%d%dT") ~= nil)')" = true
check "and must_staple false (Pebble sets no TLS Feature)" test "$(row_field a.ocsp.test 'tostring(r.must_staple)')" = false

# fresh staples (30 s of their 60 s span left) are not asked for again on 1 s ticks
before=$(ocsp_requests)
sleep 5
check "fresh staples are not fetched again (no request to the responder in 5 s of 1 s OCSP ticks)" \
  test "$(ocsp_requests)" -eq "$before"

# revoked at the responder: the next OCSP pass after the staple's refresh time replaces it
old_a=$(cert_serial "$(leaf a.ocsp.test)")
cp "$(leaf a.ocsp.test)" "$WORK/a-old.pem"
old_a_key=$(cat "$store/a.ocsp.test/a.ocsp.test.key")
issued_before=$(pebble_issued)
ocsp_revoke "$old_a" superseded
check "the responder says revoked for a (reference client)" test "$(ocsp_query "$WORK/a-old.pem")" = revoked
check "certmaint sees the revocation (event=revoked name=a.ocsp.test, source ocsp)" \
  wait_for 60 logged revoked "$log" a.ocsp.test
check "a is replaced: a new serial in storage" \
  wait_for 30 bash -c "[ \"\$(openssl x509 -in '$store/a.ocsp.test/a.ocsp.test.crt' -noout -serial | tr A-F a-f)\" != 'serial=$old_a' ]"
check "Pebble issued one certificate for it" wait_for 10 bash -c "[ \$(grep -c 'Issued certificate serial' '$PEBBLE_LOG') -eq $((issued_before + 1)) ]"
check "the replacement keeps its key (reuse_key; superseded is no key compromise)" \
  test "$(cat "$store/a.ocsp.test/a.ocsp.test.key")" = "$old_a_key"
new_a_leaf=$(leaf a.ocsp.test)
new_a_sf=$(staple_file a.ocsp.test)
check "the new certificate gets a stored staple under its own key" wait_for 30 test -s "$new_a_sf"
check "which verifies good for it" wait_for 10 bash -c "[ \"\$(openssl ocsp -respin '$new_a_sf' -issuer '$OCSP_DIR/signer.pem' -cert '$new_a_leaf' -CAfile '$OCSP_DIR/root.pem' -no_nonce 2>&1 | grep -c ': good')\" = 1 ]"
check "the deployed a.ocsp.test.pem.ocsp is the new staple" wait_for 10 cmp -s "$new_a_sf" "$CERTMAINT_DEPLOY_DIR/a.ocsp.test.pem.ocsp"
check "the deployed PEM is the new certificate" \
  bash -c "openssl x509 -in '$CERTMAINT_DEPLOY_DIR/a.ocsp.test.pem' -noout -serial | tr A-F a-f | grep -vq 'serial=$old_a'"
status_json
check "status --json: a has the new serial and a good staple" \
  test "$(row_field a.ocsp.test 'r.serial:lower() .. " " .. tostring(r.ocsp and r.ocsp.status)')" = "$(cert_serial "$new_a_leaf") good"
check "b, c and the staple-only certificate were not replaced (one issuance more in all)" \
  test "$(pebble_issued)" -eq $((issued_before + 1))
check "the staple-only certificate is the one lego obtained" \
  test "$(openssl x509 -in "$CERTMAINT_STAPLE_FILE" -noout -serial)" = "$(openssl x509 -in "$WORK/other.leaf" -noout -serial)"
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0
check "no error logged but the revocation itself" \
  bash -c "! grep 'level=error' '$log' | grep -v 'event=revoked '"
grep 'level=error' "$log" | grep -v 'event=revoked ' | head -5 || true

# certmaint revoke --reason 1: keyCompromise
cp "$(leaf b.ocsp.test)" "$WORK/b-old.pem"
old_b=$(cert_serial "$WORK/b-old.pem")
cp "$store/b.ocsp.test/b.ocsp.test.key" "$WORK/b-old.key"
set +e; "$BIN" revoke "$policy" b.ocsp.test --reason 1 >"$WORK/revoke.out" 2>"$WORK/revoke.log"; rc=$?; set -e
check "certmaint revoke --reason 1 exits 0 ($(head -c 200 "$WORK/revoke.out"))" test "$rc" -eq 0
check "it says what it revoked" grep -q "revoked serial $old_b (keyCompromise)" "$WORK/revoke.out"
check "Pebble has it revoked for keyCompromise" \
  bash -c "ocsp_json=\$(curl -sf --cacert '$PEBBLE_CA_BUNDLE' '$PEBBLE_MGMT/cert-status-by-serial/$old_b'); grep -q '\"Status\": *\"Revoked\"' <<<\"\$ocsp_json\" && grep -q '\"Reason\": *1' <<<\"\$ocsp_json\""
check "and so has the responder (synced from Pebble)" \
  wait_for 10 bash -c "openssl ocsp -issuer '$OCSP_DIR/signer.pem' -cert '$WORK/b-old.pem' -url '$OCSP_URL' -CAfile '$OCSP_DIR/root.pem' -no_nonce 2>&1 | grep -q 'Reason: keyCompromise'"
new_b=$(cert_serial "$(leaf b.ocsp.test)")
check "b is replaced (new serial $new_b)" test "$new_b" != "$old_b"
check "with a new key although reuse_key = true" \
  bash -c "! cmp -s '$WORK/b-old.key' '$store/b.ocsp.test/b.ocsp.test.key'"
check "the new certificate is for the new key" \
  bash -c "[ \"\$(openssl x509 -in '$store/b.ocsp.test/b.ocsp.test.crt' -noout -pubkey)\" = \"\$(openssl pkey -in '$store/b.ocsp.test/b.ocsp.test.key' -pubout)\" ]"
aside=$(grep -rl -- "$(sed -n 2p "$WORK/b-old.key")" "$CERTMAINT_DATA" --include='*.key' 2>/dev/null | grep -v "/certificates/" | head -1 || true)
check "the compromised key is set aside in storage (${aside#$CERTMAINT_DATA/}), 0600, not as a site key" \
  bash -c "[ -n '$aside' ] && cmp -s '$aside' '$WORK/b-old.key' && [ \"\$(stat -c %a '$aside')\" = 600 ]"
check "the old key is in no certificate set" \
  bash -c "! grep -rlq -- \"\$(sed -n 2p '$WORK/b-old.key')\" '$CERTMAINT_DATA/certificates'"

"$BIN" once "$policy" >"$WORK/once.out" 2>"$WORK/once.log" || true
check "certmaint once: the new b gets a good staple" logged staple_updated "$WORK/once.log" b.ocsp.test "status=good"
check "stored, verified good by the reference client" \
  test "$(ocsp_check_staple "$(staple_file b.ocsp.test)" "$(leaf b.ocsp.test)")" = good
check "and deployed as b.ocsp.test.pem.ocsp" cmp -s "$(staple_file b.ocsp.test)" "$CERTMAINT_DEPLOY_DIR/b.ocsp.test.pem.ocsp"
ocsp_tick=$(grep 'event=tick' "$WORK/once.log" | grep 'kind=ocsp' | head -1)
check "its OCSP pass: four due (three managed, one staple-only), none failed ($ocsp_tick)" \
  bash -c "grep -q ' due=4' <<<'$ocsp_tick' && grep -q ' failed=0' <<<'$ocsp_tick'"
"$BIN" once "$policy" >"$WORK/once2.out" 2>"$WORK/once2.log" || true
ocsp_tick=$(grep 'event=tick' "$WORK/once2.log" | grep 'kind=ocsp' | head -1)
from_storage=$(sed -n 's/.* from_storage=\([0-9]*\).*/\1/p' <<<"$ocsp_tick")
check "a second once takes the staple just fetched from storage ($ocsp_tick)" test "${from_storage:-0}" -ge 1
check "the once runs logged no error" bash -c "! grep -h 'level=error' '$WORK/once.log' '$WORK/once2.log' '$WORK/revoke.log' | grep -v 'event=revoked '"
grep -h 'level=error' "$WORK/once.log" "$WORK/once2.log" "$WORK/revoke.log" | head -5 || true
finish
