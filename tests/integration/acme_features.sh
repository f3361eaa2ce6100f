#!/usr/bin/env bash
# certmaint.issuer.acme against a real Pebble that requires External Account
# Binding and offers an alternate chain (PEBBLE_ALTERNATE_ROOTS=1): refused
# without EAB (a final error naming externalAccountRequired), obtained with it;
# preferred_chain picks the chain up to the alternate root (openssl verify
# against that root, not the default one); `certmaint revoke` revokes at
# Pebble (its management API says Revoked) and obtains a replacement; after
# Pebble restarts (every account forgotten) the stored account is registered again.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

export EAB_KID_VALUE=kid-certmaint
EAB_HMAC_VALUE=$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')
export PEBBLE_ALTERNATE_ROOTS=1
pebble_start --nosleep --eab "$EAB_KID_VALUE:$EAB_HMAC_VALUE" --eab-required
policy=$POL/acme_features.lua
store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY
mkdir -p "$CERTMAINT_DATA"
curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/roots/0" > "$WORK/root0.pem"
curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/roots/1" > "$WORK/root1.pem"
alt_cn=$(openssl x509 -in "$WORK/root1.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject=CN=//')
check "Pebble has an alternate root ($alt_cn)" test -n "$alt_cn"

set +e; ACME_EMAIL=noeab@example.test "$BIN" once "$policy" >/dev/null 2>"$WORK/noeab.log"; rc=$?; set -e
check "without eab the CA refuses the account (exit $rc)" test "$rc" -ne 0
check "the error names externalAccountRequired and is final" \
  grep -q 'event=job_gave_up.*externalAccountRequired.*reason="final error"' "$WORK/noeab.log"

set +e; EAB_KID=$EAB_KID_VALUE EAB_HMAC=$EAB_HMAC_VALUE PREFERRED_CHAIN=$alt_cn \
  "$BIN" once "$policy" >/dev/null 2>"$WORK/eab.log"; rc=$?; set -e
check "with eab = { kid, hmac_key } the certificate is obtained (exit $rc)" test "$rc" -eq 0
crt=$store/alt.example.test/alt.example.test.crt
awk 'f<1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/leaf.pem"
awk 'f>=1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/rest.pem"
check "preferred_chain: the stored chain verifies against the alternate root" \
  bash -c "openssl verify -CAfile '$WORK/root1.pem' -untrusted '$WORK/rest.pem' '$WORK/leaf.pem' >/dev/null"
check "preferred_chain: and not against the default root" \
  bash -c "! openssl verify -CAfile '$WORK/root0.pem' -untrusted '$WORK/rest.pem' '$WORK/leaf.pem' >/dev/null 2>&1"
check "the account JSON records the binding it was made with" \
  test "$(json_eval "$CERTMAINT_DATA/acme/$PEBBLE_ISSUER_KEY/users/eab@example.test/eab.json" \
    'type(v.externalAccountBinding) == "table" and v.externalAccountBinding.protected ~= nil')" = true

serial=$(openssl x509 -in "$WORK/leaf.pem" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f')
set +e; EAB_KID=$EAB_KID_VALUE EAB_HMAC=$EAB_HMAC_VALUE PREFERRED_CHAIN=$alt_cn \
  "$BIN" revoke "$policy" alt.example.test --reason 4 >"$WORK/revoke.out" 2>"$WORK/revoke.log"; rc=$?; set -e
check "certmaint revoke succeeds (exit $rc)" test "$rc" -eq 0
status=$(curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/cert-status-by-serial/$serial" | \
  lua54 -e "local core = require 'certmaint.core'; local v = core.json_decode(io.read('a')); print(v.Status)")
check "Pebble reports serial $serial Revoked ($status)" test "$status" = Revoked
new_serial=$(openssl x509 -in "$crt" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f')
check "a replacement was obtained ($new_serial)" test "$new_serial" != "$serial"

# Pebble restarted: it forgot every account; the stored one is registered again
pebble_kill
pebble_start
set +e; EAB_KID=$EAB_KID_VALUE EAB_HMAC=$EAB_HMAC_VALUE "$BIN" renew "$policy" alt.example.test --force \
  >"$WORK/renew.out" 2>"$WORK/renew.log"; rc=$?; set -e
check "after a CA that lost its accounts, renew still succeeds (exit $rc)" test "$rc" -eq 0
check "the forgotten account is noticed and registered again" \
  bash -c "grep -q event=acme_account_unknown '$WORK/renew.log' && grep -q event=acme_account_registered '$WORK/renew.log'"
finish
