#!/usr/bin/env bash
# Deploy is tracked state, with the real binary: a deploy to an unwritable
# folder is shown by `status` and retried on the back-off until it works, with
# no restart; a restart (`run` and `once`) redeploys a deleted target file.
source "$(dirname "$0")/lib.bash"

export CERTMAINT_RENEW_CHECK=1s
export CERTMAINT_DEPLOY_DIR=$WORK/deploy
policy=$POL/ok_deploy.lua
target=$CERTMAINT_DEPLOY_DIR/deploy.test
mkdir -p "$CERTMAINT_DEPLOY_DIR"
# root ignores modes: the immutable attribute makes the folder refuse new files
readonly_dir() { if [ "$(id -u)" = 0 ]; then chattr +i "$1"; else chmod 0500 "$1"; fi; }
writable_dir() { if [ "$(id -u)" = 0 ]; then chattr -i "$1"; fi; chmod 0755 "$1"; }
trap 'writable_dir "$CERTMAINT_DEPLOY_DIR" 2>/dev/null || true; cleanup' EXIT
readonly_dir "$CERTMAINT_DEPLOY_DIR"

log=$WORK/run.log
"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "the certificate is obtained" wait_for 20 grep -q 'event=obtained.*name=deploy.test' "$log"
check "the deploy to the unwritable folder fails, saying so" \
  wait_for 10 grep -q 'event=deploy_failed.*name=deploy.test' "$log"
"$BIN" status "$policy" > "$WORK/status.txt"
check "status shows the deploy failure and its retry" \
  grep -q "deploy to files:$CERTMAINT_DEPLOY_DIR failed: deploy: .*(attempt 1, retry " "$WORK/status.txt"
check "status shows nothing deployed" grep -q 'failed (never)' "$WORK/status.txt"
"$BIN" status "$policy" --json > "$WORK/status.json"
check "status --json: deploy state failed, with the error and next attempt" \
  test "$(json_eval "$WORK/status.json" "v[1].deploy[1].state .. ' ' .. tostring(v[1].deploy[1].error ~= nil) .. ' ' .. type(v[1].deploy[1].next_attempt)")" = "failed true string"
set +e; "$BIN" status "$policy" --check > "$WORK/check.txt"; rc=$?; set -e
check "status --check: exit 1, naming the failed deploy" \
  bash -c "[ $rc -eq 1 ] && grep -q '^certmaint WARNING: 1 of 1 certificate needs attention: deploy.test deploy to files:' $WORK/check.txt"

writable_dir "$CERTMAINT_DEPLOY_DIR"
# certmagic's first retry interval is 1 minute
check "once the folder is writable the retry deploys it, without a restart" \
  wait_for 90 test -s "$target/fullchain.pem"
check "the daemon is still the same process" kill -0 "$pid"
check "the deploy is logged as done" wait_for 5 grep -q 'event=deploy_done.*name=deploy.test' "$log"
check "the reload command ran" test -s "$CERTMAINT_DEPLOY_DIR.reloads"
stored=$CERTMAINT_DATA/certificates/local/deploy.test/deploy.test.crt
check "the deployed chain is the stored one" cmp -s "$stored" "$target/fullchain.pem"
"$BIN" status "$policy" --json > "$WORK/status.json"
serial=$(json_eval "$WORK/status.json" "v[1].serial")
check "status --json: deployed, the stored serial, no error" \
  test "$(json_eval "$WORK/status.json" "v[1].deploy[1].state .. ' ' .. v[1].deploy[1].serial .. ' ' .. tostring(v[1].deploy[1].error == core.json_null)")" = "deployed $serial true"
set +e; "$BIN" status "$policy" --check > "$WORK/check.txt"; rc=$?; set -e
check "status --check: all well again, exit 0" bash -c "[ $rc -eq 0 ] && grep -q '^certmaint OK' $WORK/check.txt"
"$BIN" status "$policy" > "$WORK/status.txt"
check "status shows the time and serial deployed" grep -q "Z ${serial:0:8}" "$WORK/status.txt"
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0

# a restart redeploys a deleted target file
rm "$target/privkey.pem"
log2=$WORK/run2.log
"$BIN" run "$policy" 2>"$log2" &
pid2=$!; PIDS+=("$pid2")
check "run: the deleted key is deployed again at start-up" wait_for 20 test -s "$target/privkey.pem"
check "run: saying why" grep -q 'event=redeploying.*reason="deployed files missing or changed"' "$log2"
kill -TERM "$pid2"
set +e; wait "$pid2"; set -e
check "run: the key deployed is the stored one" \
  cmp -s "$CERTMAINT_DATA/certificates/local/deploy.test/deploy.test.key" "$target/privkey.pem"
rm "$target/fullchain.pem"
set +e; "$BIN" once "$policy" >"$WORK/once.out" 2>"$WORK/once.log"; rc=$?; set -e
check "once: exit status 0" test "$rc" -eq 0
check "once: the deleted chain is deployed again" cmp -s "$stored" "$target/fullchain.pem"
check "once: reports it" grep -q 'deployed 1, deploy failed 0' "$WORK/once.out"
set +e; "$BIN" once "$policy" >"$WORK/once2.out" 2>/dev/null; set -e
check "once: nothing differs, nothing deployed" grep -q 'deployed 0, deploy failed 0' "$WORK/once2.out"

# renew with a deploy that fails: renewed, but exit status 1
readonly_dir "$target"
set +e; "$BIN" renew "$policy" --force >"$WORK/renew.out" 2>/dev/null; rc=$?; set -e
writable_dir "$target"
check "renew --force with a failing deploy: exit status 1, saying so" \
  bash -c "[ $rc -eq 1 ] && grep -q 'deploy.test .*renewed' $WORK/renew.out && grep -q 'deploy(s) failed' $WORK/renew.out"
set +e; "$BIN" once "$policy" >"$WORK/once-after-renew.out" 2>/dev/null; rc=$?; set -e
check "the next start-up deploys the renewed certificate" \
  bash -c "[ $rc -eq 0 ] && cmp -s $stored $target/fullchain.pem && grep -q 'deployed 1,' $WORK/once-after-renew.out"

# revoke replaces the certificate and deploys the replacement
before=$(openssl x509 -in "$target/fullchain.pem" -noout -serial)
set +e; "$BIN" revoke "$POL/ok_deploy_revocable.lua" deploy.test >/dev/null 2>"$WORK/revoke.log"; rc=$?; set -e
check "revoke: exit status 0, the old certificate revoked" \
  bash -c "[ $rc -eq 0 ] && grep -q 'event=test_revoked' $WORK/revoke.log"
check "revoke: the replacement is deployed, not only stored" \
  bash -c "[ \"\$(openssl x509 -in $target/fullchain.pem -noout -serial)\" != '$before' ] && cmp -s $stored $target/fullchain.pem"

# once with a deploy that fails: exit status 1
rm -rf "$target"
readonly_dir "$CERTMAINT_DEPLOY_DIR"
set +e; "$BIN" once "$policy" >"$WORK/once3.out" 2>/dev/null; rc=$?; set -e
writable_dir "$CERTMAINT_DEPLOY_DIR"
check "once: a failed deploy is exit status 1" test "$rc" -eq 1
check "once: and counted" grep -q 'deploy failed 1' "$WORK/once3.out"
finish
