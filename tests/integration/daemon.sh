#!/usr/bin/env bash
# `certmaint run` for real: 8-second certificates renewed before they expire,
# SIGHUP with a broken and a good policy, SIGTERM stopping cleanly, and a policy
# whose hooks raise on every call surviving.
source "$(dirname "$0")/lib.bash"

export CERTMAINT_LIFETIME=8s CERTMAINT_RENEW_CHECK=1s
policy=$WORK/policy.lua
cp "$POL/ok_basic.lua" "$policy"
log=$WORK/run.log
"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")

count() { grep -c "$1" "$log" || true; }
check "obtains both certificates" wait_for 20 bash -c "[ \$(grep -c 'event=obtained' $log) -ge 2 ]"
check "renews each certificate at least twice within 30 s" \
  wait_for 30 bash -c "[ \$(grep -c 'event=renewed' $log) -ge 4 ]"
expired=$(lua54 -e "
  local core = require 'certmaint.core'
  local n = 0
  for _, f in ipairs { 'example.test', 'www.example.test' } do
    local fh = assert(io.open('$CERTMAINT_DATA/certificates/local/' .. f .. '/' .. f .. '.crt'))
    local c = assert(core.cert_parse(fh:read('a'))); fh:close()
    if c.not_after <= os.time() then n = n + 1 end
  end
  print(n)")
check "no stored certificate is expired" test "$expired" = 0

# SIGHUP with a policy that does not load: the running one stays
echo 'return certmaint.policy { certificates = 42 }' > "$policy"
kill -HUP "$pid"
check "a broken policy on SIGHUP is reported" wait_for 10 grep -q 'event=policy_reload_failed' "$log"
check "the daemon keeps running after a failed reload" kill -0 "$pid"
n=$(count 'event=renewed')
check "and keeps renewing" wait_for 15 bash -c "[ \$(grep -c 'event=renewed' $log) -gt $n ]"
# SIGHUP with a good policy adding a certificate
sed 's/"example.test",/"example.test", "added.test",/' "$POL/ok_basic.lua" > "$policy"
kill -HUP "$pid"
check "a good policy on SIGHUP is applied" wait_for 10 grep -q 'event=policy_reloaded' "$log"
check "the added certificate is obtained" wait_for 15 grep -q 'event=obtained.*name=added.test' "$log"

kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0
check "SIGTERM: logs the stop" grep -q 'event=stopped' "$log"
# lock files must be gone; locks/*.token stay (a fencing token never goes back)
check "SIGTERM: no lock left behind" bash -c "[ -z \"\$(ls -A $CERTMAINT_DATA/locks 2>/dev/null | grep '\\.lock\$')\" ]"
check "no error lines in the whole run (besides the planned reload failure)" \
  bash -c "[ \$(grep 'level=error' $log | grep -vc 'event=policy_reload_failed') -eq 0 ]"

# SIGTERM while a certificate is being obtained: the job finishes, then exit
log3=$WORK/slow.log
rm -rf "$CERTMAINT_DATA"
"$BIN" run "$POL/ok_slow_issuer.lua" 2>"$log3" &
pid3=$!; PIDS+=("$pid3")
check "slow issuer: issuance under way" wait_for 10 grep -q 'event=slow_issue_started' "$log3"
kill -TERM "$pid3"
set +e; wait "$pid3"; rc=$?; set -e
check "SIGTERM mid-issuance: exit status 0" test "$rc" -eq 0
check "SIGTERM mid-issuance: the in-flight certificate was finished and stored before the stop" \
  bash -c "grep -n 'event=obtained' $log3 | head -1 | cut -d: -f1 | { read a; b=\$(grep -n 'event=stopped' $log3 | cut -d: -f1); [ -n \"\$a\" ] && [ \"\$a\" -lt \"\$b\" ]; }"
check "SIGTERM mid-issuance: key and certificate stored and matching" \
  bash -c "[ \"\$(openssl x509 -in $CERTMAINT_DATA/certificates/local/slow.test/slow.test.crt -noout -pubkey)\" = \"\$(openssl pkey -in $CERTMAINT_DATA/certificates/local/slow.test/slow.test.key -pubout)\" ]"
check "SIGTERM mid-issuance: lock released" bash -c "[ -z \"\$(ls -A $CERTMAINT_DATA/locks 2>/dev/null | grep '\\.lock\$')\" ]"

# a policy whose hooks raise on every call
log2=$WORK/raise.log
"$BIN" run "$POL/ok_raising_hooks.lua" 2>"$log2" &
pid2=$!; PIDS+=("$pid2")
check "raising hooks: still renews" wait_for 30 bash -c "[ \$(grep -c 'event=renewed' $log2) -ge 2 ]"
check "raising hooks: each failure is logged with the hook's name" \
  bash -c "grep -q 'event=hook_failed.*hook=on_tick' $log2 && grep -q 'event=hook_failed.*hook=on_renewed' $log2"
check "raising hooks: daemon alive" kill -0 "$pid2"
kill -INT "$pid2"
set +e; wait "$pid2"; rc=$?; set -e
check "SIGINT: exit status 0" test "$rc" -eq 0
finish
