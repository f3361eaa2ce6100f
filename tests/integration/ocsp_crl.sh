#!/usr/bin/env bash
# CRL checks against a real CRL server on 127.0.0.1: certmaint's internal CA
# names a CRL distribution point and no OCSP responder; the CRLs are made
# with `openssl ca -gencrl` from the internal CA's intermediate and key in
# storage. `certmaint once` each time: no CRL yet -> an error naming the URL,
# nothing revoked; a CRL listing nothing -> fetched, stored, nothing happens;
# while the stored CRL is valid a newer one is not fetched; once it is past
# its nextUpdate the new CRL, listing a's serial, is fetched -> a is replaced
# (new serial), b untouched; a CRL signed by another key and a stale CRL are
# refused with an error naming the URL, and revoke nothing.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
source "$(dirname "$0")/ocsp.bash"

ocsp_env
export CERTMAINT_CRL_URL=$CRL_URL
policy=$POL/ocsp_crl.lua
store=$CERTMAINT_DATA/certificates/local
ca=$CERTMAINT_DATA/pki/authorities/local
mkdir -p "$CERTMAINT_DATA"
crl_server_start

serial_of() { openssl x509 -in "$store/$1/$1.crt" -noout -serial | sed 's/^serial=//' | tr A-F a-f; }
once() { # LOG: certmaint once, its exit status in $once_rc
  set +e; "$BIN" once "$policy" >"$WORK/$1.out" 2>"$WORK/$1.log"; once_rc=$?; set -e
}
stored_crl() { find "$CERTMAINT_DATA/certmaint/crl" -name '*.der' 2>/dev/null | head -1; }
wait_until() { local t=$1; while [ "$(date +%s)" -le "$t" ]; do sleep 0.2; done; }
crl_next() { date -u -d "$(openssl crl -inform DER -in "$1" -noout -nextupdate | cut -d= -f2)" +%s; }

once first
check "first once: both certificates obtained from the internal CA" \
  test "$(grep -c 'event=obtained' "$WORK/first.log")" -eq 2
leaf_a=$store/a.crl.test/a.crl.test.crt
check "they name the CRL and no OCSP responder" \
  bash -c "openssl x509 -in '$leaf_a' -noout -ext crlDistributionPoints | grep -qF '$CRL_URL' && [ -z \"\$(openssl x509 -in '$leaf_a' -noout -ocsp_uri)\" ]"
check "no CRL served yet (404): crl_failed naming the URL" \
  bash -c "grep 'event=crl_failed' '$WORK/first.log' | grep -qF 'url=$CRL_URL'"
check "nothing revoked" bash -c "! grep -q 'event=revoked' '$WORK/first.log'"
a0=$(serial_of a.crl.test) b0=$(serial_of b.crl.test)

check "the internal CA's intermediate and key are in storage" test -s "$ca/intermediate.crt" -a -s "$ca/intermediate.key"
check "and the leaves are issued by it" \
  bash -c "openssl verify -partial_chain -CAfile '$ca/intermediate.crt' '$leaf_a' | grep -q ': OK'"

# a CRL listing nothing, valid for 15 s
crl_make "$ca/intermediate.crt" "$ca/intermediate.key" "$WORK/empty.crl" 15
crl_publish "$WORK/empty.crl"
empty_next=$(crl_next "$WORK/empty.crl")
once empty
check "a CRL listing nothing: fetched (crl_updated naming the URL)" \
  bash -c "grep 'event=crl_updated' '$WORK/empty.log' | grep -qF 'url=$CRL_URL'"
check "stored in storage byte for byte ($(stored_crl | sed "s#$CERTMAINT_DATA/##"))" cmp -s "$(stored_crl)" "$WORK/empty.crl"
check "nothing revoked, nothing replaced" \
  bash -c "! grep -q 'event=revoked' '$WORK/empty.log' && [ '$(serial_of a.crl.test)' = '$a0' ] && [ '$(serial_of b.crl.test)' = '$b0' ]"
check "the once exits 0" test "$once_rc" -eq 0
check "and logs no error" bash -c "! grep -q 'level=error' '$WORK/empty.log'"

# a's serial listed (keyCompromise is not the point here: superseded), valid
# until 10 s after the stored empty CRL expires
crl_make "$ca/intermediate.crt" "$ca/intermediate.key" "$WORK/listed.crl" $((empty_next + 10 - $(date +%s))) "$a0:superseded"
crl_publish "$WORK/listed.crl"
requests=$(crl_requests)
once cached
if [ "$(date +%s)" -lt "$empty_next" ]; then
  check "while the stored CRL is valid no CRL is fetched" test "$(crl_requests)" -eq "$requests"
  check "so a stays (the stored CRL does not list it)" test "$(serial_of a.crl.test)" = "$a0"
fi
wait_until "$empty_next"
once listed
check "past the stored CRL's nextUpdate the new one is fetched" \
  bash -c "grep 'event=crl_updated' '$WORK/listed.log' | grep -qF 'url=$CRL_URL'"
check "a is found revoked by the CRL (event=revoked name=a.crl.test)" \
  bash -c "grep 'event=revoked' '$WORK/listed.log' | grep -q 'name=a.crl.test'"
check "and replaced: a new serial in storage" test "$(serial_of a.crl.test)" != "$a0"
check "b is untouched" test "$(serial_of b.crl.test)" = "$b0"
check "the once exits 0" test "$once_rc" -eq 0
check "no error but the revocation" bash -c "! grep 'level=error' '$WORK/listed.log' | grep -v 'event=revoked ' | grep -q ."
a1=$(serial_of a.crl.test)
listed_next=$(crl_next "$WORK/listed.crl")

# the same CRL again: the replacement is not listed, nothing happens
once again
check "the CRL listing the old serial replaces nothing more" \
  bash -c "[ '$(serial_of a.crl.test)' = '$a1' ] && [ '$(serial_of b.crl.test)' = '$b0' ] && ! grep -q 'event=revoked' '$WORK/again.log'"

# signed by another key under the same issuer name: refused
subject=$(openssl x509 -in "$ca/intermediate.crt" -noout -subject -nameopt compat | sed 's/^subject=//')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "$subject" \
  -keyout "$WORK/forger.key" -out "$WORK/forger.pem" >/dev/null 2>&1
check "a forged CA with the intermediate's name" \
  test "$(openssl x509 -in "$WORK/forger.pem" -noout -subject)" = "$(openssl x509 -in "$ca/intermediate.crt" -noout -subject)"
crl_make "$WORK/forger.pem" "$WORK/forger.key" "$WORK/forged.crl" 60 "$b0"
crl_publish "$WORK/forged.crl"
wait_until "$listed_next"
once forged
check "a CRL signed by another key: crl_failed naming the URL" \
  bash -c "grep 'event=crl_failed' '$WORK/forged.log' | grep -qF 'url=$CRL_URL'"
grep 'event=crl_failed' "$WORK/forged.log" | head -1
check "b, which it lists, is not revoked" \
  bash -c "[ '$(serial_of b.crl.test)' = '$b0' ] && ! grep -q 'event=revoked' '$WORK/forged.log'"
check "the forged CRL is not stored" bash -c "! cmp -s '$(stored_crl)' '$WORK/forged.crl'"

# stale: nextUpdate already passed when fetched
crl_make "$ca/intermediate.crt" "$ca/intermediate.key" "$WORK/stale.crl" 1 "$b0"
sleep 2
crl_publish "$WORK/stale.crl"
once stale
check "a stale CRL: crl_failed naming the URL" \
  bash -c "grep 'event=crl_failed' '$WORK/stale.log' | grep -qF 'url=$CRL_URL'"
check "b, which it lists, is not revoked" \
  bash -c "[ '$(serial_of b.crl.test)' = '$b0' ] && ! grep -q 'event=revoked' '$WORK/stale.log'"
finish
