#!/usr/bin/env bash
# The command line: exit codes, errors naming file:line, once/status/check/renew/clean.
source "$(dirname "$0")/lib.bash"

out=$WORK/out; err=$WORK/err
run() { set +e; "$BIN" "$@" >"$out" 2>"$err"; rc=$?; set -e; }

run --help;                check "--help exits 0" test $rc -eq 0
check "--help lists every command" bash -c "grep -q 'run POLICY' $out && grep -q 'check POLICY' $out && grep -q 'clean POLICY' $out"
run status --help;         check "status --help exits 0 and explains --json" bash -c "[ $rc -eq 0 ] && grep -q -- --json $out"
run bogus;                 check "unknown command exits 2" test $rc -eq 2
run check;                 check "missing POLICY exits 2" test $rc -eq 2
run check "$WORK/nope.lua"; check "unreadable policy exits 2" test $rc -eq 2

run check "$POL/err_field.lua"
check "wrong field: exit 2" test $rc -eq 2
check "wrong field: names the field and file:line" grep -q 'err_field.lua:4:.*renew_windwo' "$err"
run check "$POL/err_syntax.lua"
check "syntax error: exit 2 with file:line" bash -c "[ $rc -eq 2 ] && grep -q 'err_syntax.lua:4:' $err"
run check "$POL/err_global.lua"
check "undefined global: exit 2 naming it" bash -c "[ $rc -eq 2 ] && grep -q \"err_global.lua:3:.*hostname\" $err"

# a storage root that does not exist is an error (a typo must not pass for an
# empty store) for every command but run, which creates it
for cmd in check status once renew clean; do
  run $cmd "$POL/ok_basic.lua"
  check "$cmd on a missing storage root: exit 1, naming it" \
    bash -c "[ $rc -eq 1 ] && grep -q 'storage root $CERTMAINT_DATA does not exist' $err"
done
run status "$POL/ok_basic.lua" --check
check "status --check on a missing storage root: exit 1" \
  bash -c "[ $rc -eq 1 ] && grep -q 'storage root $CERTMAINT_DATA does not exist' $err"
run check "$POL/ok_basic.lua"
check "check on a missing storage root says the policy itself is ok" grep -q 'the policy is ok' "$err"
check "none of them created the root" test ! -e "$CERTMAINT_DATA"
CERTMAINT_DATA=$WORK/created "$BIN" run "$POL/ok_basic.lua" 2>"$WORK/created.log" &
runpid=$!; PIDS+=("$runpid")
check "run creates a missing storage root, saying so" \
  wait_for 10 grep -q "event=storage_root_created storage=file:$WORK/created" "$WORK/created.log"
kill -TERM "$runpid"; wait "$runpid" || true
check "run went on to obtain into it" grep -q 'event=obtained' "$WORK/created.log"
mkdir -p "$CERTMAINT_DATA"

run check "$POL/ok_basic.lua"
check "check on a fresh store: exit 0, plans to obtain both" bash -c "[ $rc -eq 0 ] && [ \$(grep -c ' obtain ' $out) -eq 2 ]"
check "check changed nothing" test ! -e "$CERTMAINT_DATA/certificates"

run once "$POL/ok_basic.lua"
check "once obtains both certificates" bash -c "[ $rc -eq 0 ] && grep -q 'obtained 2' $out"
crt=$CERTMAINT_DATA/certificates/local/example.test/example.test.crt
key=$CERTMAINT_DATA/certificates/local/example.test/example.test.key
check "certificate stored in Caddy's layout" test -s "$crt"
check "private key is 0600" test "$(stat -c %a "$key")" = 600
check "site folder is 0700" test "$(stat -c %a "$(dirname "$key")")" = 700
check "CA key is 0600" test "$(stat -c %a "$CERTMAINT_DATA/pki/authorities/local/intermediate.key")" = 600
check "stored chain verifies against the local root" \
  openssl verify -CAfile "$CERTMAINT_DATA/pki/authorities/local/root.crt" -untrusted "$crt" "$crt"

run once "$POL/ok_basic.lua"
check "a second once obtains nothing" bash -c "[ $rc -eq 0 ] && grep -q 'obtained 0' $out"

run status "$POL/ok_basic.lua" --json
check "status --json exits 0" test $rc -eq 0
check "status --json: two certificates, not due, names and RFC 3339 times" \
  test "$(json_eval "$out" '#v .. " " .. tostring(v[1].renewal_due) .. " " .. v[2].names[2] .. " " .. v[1].not_after:match("^%d+%-%d+%-%d+T%d+:%d+:%d+Z$")')" \
       = "2 false api.example.test $(json_eval "$out" 'v[1].not_after')"
run status "$POL/ok_basic.lua"
check "status table has a row per certificate" test "$(grep -c 'example.test' "$out")" -eq 2
run status "$POL/ok_basic.lua" --check
check "status --check with all well: exit 0, one OK line" \
  bash -c "[ $rc -eq 0 ] && [ \$(wc -l < $out) -eq 1 ] && grep -qx 'certmaint OK: 2 certificates, none needs attention' $out"
run status "$POL/ok_basic.lua" --check --json
check "status --check --json: the JSON on stdout, the line on stderr" \
  bash -c "[ $rc -eq 0 ] && grep -q 'certmaint OK' $err && [ $(json_eval "$out" '#v') = 2 ]"
run status "$POL/err_decision_hook.lua" --check
check "status --check with a failing needs_renewal hook: exit 1, saying so" \
  bash -c "[ $rc -eq 1 ] && grep -q '^certmaint WARNING: .*policy hooks failed' $out"
# issue 7 A.1 / C.9: a failing needs_renewal falls back to the default rule, and says so
run check "$POL/err_decision_hook.lua"
check "A.1 check with a failing needs_renewal hook: exit 1, an error row naming the fallback" \
  bash -c "[ $rc -eq 1 ] && grep -q ' error .*needs_renewal hook failed: .*raises on purpose; the default rule decided (renew at 20' $out"
run once "$POL/err_decision_hook.lua"
check "A.1 once with a failing needs_renewal hook: exit 1, saying the hooks failed" \
  bash -c "[ $rc -eq 1 ] && grep -q '^certmaint: policy hooks failed [0-9]* time.*needs_renewal' $err"
run status "$POL/err_decision_hook.lua" --json
check "A.1 status --json with a failing needs_renewal hook: last_error says so, renewal_at is the default rule's" \
  test "$(json_eval "$out" 'v[1].last_error:match("needs_renewal hook failed: .*; the default rule decided") and v[1].renewal_at:sub(1, 2)')" = 20
# an expired certificate (a 2-second one, and no daemon)
mkdir -p "$WORK/short"
CERTMAINT_DATA=$WORK/short CERTMAINT_LIFETIME=2s run once "$POL/ok_basic.lua"
sleep 3
CERTMAINT_DATA=$WORK/short run status "$POL/ok_basic.lua" --check
check "status --check with expired certificates: exit 1 naming them" \
  bash -c "[ $rc -eq 1 ] && grep -q '^certmaint WARNING: 2 of 2 certificates need attention: example.test expired ' $out"
CERTMAINT_DATA=$WORK/short run status "$POL/ok_basic.lua"
check "plain status keeps exit 0 all the same" bash -c "[ $rc -eq 0 ] && grep -q example.test $out"

run check "$POL/ok_basic.lua" --at +50m
check "check --at +50m: both due for renewal" test "$(grep -c ' renew  *now ' "$out")" -eq 2
run check "$POL/ok_basic.lua" --at 1999-13-01
check "check --at with a bad date exits 2" test $rc -eq 2

serial_before=$(openssl x509 -in "$crt" -noout -serial)
run renew "$POL/ok_basic.lua" example.test
check "renew when not due renews nothing" bash -c "[ $rc -eq 0 ] && grep -q 'not due' $out"
run renew "$POL/ok_basic.lua" example.test --force
check "renew --force renews" bash -c "[ $rc -eq 0 ] && grep -q 'renewed' $out"
check "the stored certificate changed" test "$(openssl x509 -in "$crt" -noout -serial)" != "$serial_before"
run renew "$POL/ok_basic.lua" unknown.test
check "renew of an unmanaged name exits 2" test $rc -eq 2

# clean: an expired certificate nobody manages goes, with its key and folder
d=$CERTMAINT_DATA/certificates/local/old.test
mkdir -p "$d"
lua54 -e "
  local core = require 'certmaint.core'
  local key = assert(core.key_generate('p256'))
  local pem = assert(core.cert_issue { subject_key = key, issuer_key = key, names = { 'old.test' },
    cn = 'old.test', not_before = 1577836800, not_after = 1577923200 })
  assert(core.write_atomic('$d/old.test.crt', pem, '0644'))
  assert(core.write_atomic('$d/old.test.key', key, '0600'))"
echo 'not a certificate' > "$d/junk.crt"
# and a staple that is no OCSP response, and a CRL past its nextUpdate
mkdir -p "$CERTMAINT_DATA/ocsp" "$CERTMAINT_DATA/certmaint/crl"
echo 'garbage' > "$CERTMAINT_DATA/ocsp/old.test-1a2b3c"
lua54 -e "
  local core = require 'certmaint.core'
  local key = assert(core.key_generate('p256'))
  local ca = assert(core.cert_issue { subject_key = key, issuer_key = key, names = { 'crl.ca.test' },
    cn = 'crl ca', not_before = 1577836800, not_after = 1893456000, is_ca = true })
  local crl = assert(core.crl_build { issuer_cert = ca, issuer_key = key, entries = {},
    this_update = 1577836800, next_update = 1577923200 })
  assert(core.write_atomic('$CERTMAINT_DATA/certmaint/crl/0123456789abcdef0123456789abcdef.der', crl, '0644'))"
run clean "$POL/ok_basic.lua"
check "clean deletes the expired certificate, the bad staple and the stale CRL, and keeps the unparseable file" \
  bash -c "[ $rc -eq 0 ] && grep -q 'deleted 1' $out && grep -q 'unparseable 1' $out \
    && grep -q 'staples deleted 1' $out && grep -q 'CRLs deleted 1' $out"
check "the stale CRL is gone" test ! -e "$CERTMAINT_DATA/certmaint/crl/0123456789abcdef0123456789abcdef.der"
check "expired certificate's key is gone" test ! -e "$d/old.test.key"
check "the unparseable file is still there" test -e "$d/junk.crt"
check "managed certificates are untouched" test -s "$crt"
# a failing issuer: once exits 1, and status shows the error and when it retries
run once "$POL/err_issuer_down.lua"
check "once with a failing issuer exits 1, saying why" bash -c "[ $rc -eq 1 ] && grep -q 'CA is unreachable' $err"
run status "$POL/err_issuer_down.lua" --json
check "status --json shows the last error, the attempt and the retry time" \
  test "$(json_eval "$out" 'v[1].last_error:match("unreachable") .. " " .. v[1].attempts .. " " .. type(v[1].next_attempt)')" = "unreachable 1 string"
run status "$POL/err_issuer_down.lua"
check "status table shows the retry" grep -q 'unreachable.*attempt 1, retry ' "$out"
check "plain status exits 0 although a renewal failed" test $rc -eq 0
run status "$POL/err_issuer_down.lua" --check
check "status --check with a failed renewal: exit 1 naming it and the error" \
  bash -c "[ $rc -eq 1 ] && grep -q '^certmaint WARNING: 1 of 1 certificate needs attention: down.test .*unreachable' $out"

# --log-format json: every log line is one JSON object with ts, level, event
run --log-format json once "$POL/ok_basic.lua"
grep '^{' "$err" | head -1 > "$WORK/line.json" || true
check "--log-format json writes JSON objects with a stable event name" \
  test "$(json_eval "$WORK/line.json" 'v.level .. " " .. type(v.event) .. " " .. type(v.ts)')" = "info string string"
check "--log-format json: no text lines" bash -c "! grep -v '^{' $err | grep -q ."

# the accounting allocator: a state that may not grow is refused cleanly, not crashed
set +e; CERTMAINT_LUA_MEMORY_MAX=100000 "$BIN" check "$POL/ok_basic.lua" >"$out" 2>"$err"; rc=$?; set -e
check "a Lua memory cap that is too small fails with a message, exit 1" \
  bash -c "[ $rc -eq 1 ] && grep -q 'not enough memory' $err"
# usage and policy mistakes are said plainly, exit 2, no traceback
mkdir -p "$WORK/policy-dir"
run check "$WORK/policy-dir"
check "check on a directory: exit 2, says it is a directory, no traceback" \
  bash -c "[ $rc -eq 2 ] && grep -q 'policy-dir: is a directory' $err && ! grep -q traceback $err"
run check "$POL/ok_basic.lua" --at
check "check --at without a value: exit 2, '--at needs a value'" \
  bash -c "[ $rc -eq 2 ] && grep -q 'check: --at needs a value' $err && ! grep -q 'unexpected argument' $err"
printf '%s\n' 'local certmaint = require "certmaint"' 'return certmaint.policy {' \
  '  issuer = certmaint.issuer.internal { key_type = "dsa" },' '  certificates = { "a.test" },' '}' > "$WORK/dsa.lua"
run check "$WORK/dsa.lua"
check "issuer.internal{key_type=\"dsa\"}: check exits 2 naming the field and file:line" \
  bash -c "[ $rc -eq 2 ] && grep -q 'dsa.lua:3: certmaint.issuer.internal: option \"key_type\" must be one of' $err"
finish
