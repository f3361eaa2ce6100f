#!/usr/bin/env bash
# Notifications from a renewal that really fails (issue 13, part 3): Pebble
# with real validation (pebble.bash, no authorization reuse) over the webroot
# solver; stopping the web server that serves the webroot makes validation
# fail. The policy (policies/notify.lua) sends every notice to a webhook
# receiver on 127.0.0.1 (notify_receiver.lua: /ok, and the hostile /hang and
# /fail), a command, sendmail (a stub that keeps each message) and a hook that
# raises. Checked: one failure notice per notifier over many ticks of a daemon
# and two more failing `once` runs (the state survives the restarts), the
# hanging and failing endpoints neither stall the passes nor stop the other
# notifiers, the raising hook is logged and survived, and after healing
# exactly one recovery arrives.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --nosleep --validity 300 --authz-reuse 0
NAME=notify.example.test
export WEBROOT=$WORK/www
mkdir -p "$WEBROOT" "$CERTMAINT_DATA" "$WORK/mail"
read -r NOTIFY_PORT _ <<<"$PEBBLE_SPARE_PORTS"
export NOTIFY_URL=http://127.0.0.1:$NOTIFY_PORT
export NOTIFY_COMMAND_OUT=$WORK/command.out
export NOTIFY_SENDMAIL=$WORK/sendmail
HOOKS=$WORK/hooks.log
: > "$HOOKS"; : > "$NOTIFY_COMMAND_OUT"; : > "$NOTIFY_COMMAND_OUT.env"
cat > "$NOTIFY_SENDMAIL" <<STUB
#!/bin/sh
# a stand-in for the local MTA: each message and its arguments kept in a file
f=\$(mktemp "$WORK/mail/msg.XXXXXX")
echo "\$*" > "\$f.args"
cat > "\$f"
STUB
chmod 755 "$NOTIFY_SENDMAIL"

# lua5.4 in the background: exec, so that $! names lua5.4 itself and not a
# subshell a TERM would leave the server running behind (acme_challenges.sh)
host_lua() {
  exec ${CERTMAINT_HOST_PRELOAD:+env LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0} lua5.4 "$@"
}
www_start() {
  host_lua "$SRC/tests/integration/webroot_server.lua" "$WEBROOT" "127.0.0.1:$PEBBLE_HTTP_PORT" >"$WORK/www.log" 2>&1 &
  www_pid=$!; PIDS+=("$www_pid")
  wait_for 10 grep -q "^listening" "$WORK/www.log"
}
www_stop() {
  kill -TERM "$www_pid"
  wait "$www_pid" || true
  check "the web server is down" bash -c "! curl -s -o /dev/null http://127.0.0.1:$PEBBLE_HTTP_PORT/"
}
host_lua "$SRC/tests/integration/notify_receiver.lua" "$HOOKS" "127.0.0.1:$NOTIFY_PORT" >"$WORK/receiver.log" 2>&1 &
PIDS+=($!)
check "the webhook receiver listens" wait_for 10 grep -q "^listening" "$WORK/receiver.log"

# notices PATH EVENT KIND: requests the receiver got on PATH for that event
notices() { grep "^$1 " "$HOOKS" | grep "\"event\": *\"$2\"" | grep -c "\"kind\": *\"$3\"" || true; }
commands() { grep -c "^$1 $2 $NAME\$" "$NOTIFY_COMMAND_OUT.env" || true; }
mails() { grep -l "^Subject: certmaint: $1 for $NAME on " "$WORK"/mail/msg.?????? 2>/dev/null | wc -l; }
# at_least N CMD...: CMD prints a number >= N (for wait_for, which re-runs it)
at_least() { local n=$1; shift; [ "$("$@")" -ge "$n" ]; }
exactly() { local n=$1; shift; [ "$("$@")" -eq "$n" ]; }
alert_record=$CERTMAINT_DATA/certmaint/alerts/$NAME.json
all_counts() {
  echo "webhook $(notices /ok failure renew)/$(notices /ok recovered renew)" \
    "command $(commands failure renew)/$(commands recovered renew)" \
    "mail $(mails "renewal failed")/$(mails "renewal recovered")"
}

# --- obtained while the web server runs: nothing to tell --------------------------------
check "the webroot's web server listens on Pebble's httpPort" www_start
set +e; "$BIN" once "$POL/notify.lua" 2>"$WORK/obtain.log"; rc=$?; set -e
check "certmaint once obtains the certificate (exit $rc)" test "$rc" -eq 0
check "obtained" grep -q "event=obtained.*name=$NAME" "$WORK/obtain.log"
check "no notice for a success" test ! -s "$HOOKS"
obtained_at=$SECONDS

# --- the web server stops: renewals fail -------------------------------------------
www_stop
# 5% of 300 s after issuance the certificate is in its window (renewal_window_ratio 0.95)
while [ $((SECONDS - obtained_at)) -lt 17 ]; do sleep 1; done
: > "$WORK/daemon.log"
CERTMAINT_RENEW_CHECK=1s "$BIN" run "$POL/notify.lua" 2>"$WORK/daemon.log" &
daemon=$!; PIDS+=("$daemon")
check "daemon: the renewal fails (Pebble cannot validate)" wait_for 60 grep -q "event=renew_failed.*name=$NAME" "$WORK/daemon.log"
check "daemon: the webhook gets the failure" wait_for 20 at_least 1 notices /ok failure renew
check "daemon: the hanging endpoint was called" grep -q "^/hang " "$HOOKS"
ticks() { grep -c "event=tick.*kind=renew" "$WORK/daemon.log" || true; }
t0=$(ticks)
sleep 3
t1=$(ticks)
check "daemon: renew passes go on while /hang holds its notice ($t0 -> $t1 ticks in 3 s)" test "$t1" -ge $((t0 + 2))
check "daemon: the command got the failure" wait_for 10 at_least 1 commands failure renew
check "daemon: sendmail got the failure" wait_for 10 at_least 1 mails "renewal failed"
check "daemon: /fail was tried 3 times (500 retried)" wait_for 15 exactly 3 notices /fail failure renew
check "daemon: the webhook that gave up on 500 is logged" \
  wait_for 15 grep -q "event=notify_failed error=.*HTTP status 500.*hook=on_failure\[3\]" "$WORK/daemon.log"
check "daemon: the hanging webhook gave up at its deadline, logged" \
  wait_for 15 grep -q "event=notify_failed.*hook=on_failure\[1\]" "$WORK/daemon.log"
check "daemon: the raising hook is logged" grep -q "event=hook_failed.*hook=on_failure\[6\]" "$WORK/daemon.log"
check "daemon: the open problem is in storage" test -s "$alert_record"
t2=$(ticks)
sleep 3
check "daemon: maintenance went on after the raise ($(ticks) ticks, $t2 before)" test "$(ticks)" -ge $((t2 + 2))
kill -TERM "$daemon"
set +e; wait "$daemon"; rc=$?; set -e
check "daemon: stops on SIGTERM (exit $rc)" test "$rc" -eq 0

# --- two more failing runs (a restart each): nothing is told again -----------------------
for i in 1 2; do
  set +e; "$BIN" once "$POL/notify.lua" 2>"$WORK/fail$i.log"; rc=$?; set -e
  if [ $rc -eq 1 ] && grep -q "event=renew_failed.*name=$NAME" "$WORK/fail$i.log"; then
    ok "failing once $i: the renewal really fails again"
  else
    fail "failing once $i: the renewal really fails again (exit $rc)"
    grep -Ev "event=(tick|job_queued|job_done)" "$WORK/fail$i.log" | cut -c1-300 | head -20
  fi
done
counts=$(all_counts)
check "one failure notice per notifier after 3 processes and many ticks ($counts)" \
  test "$counts" = "webhook 1/0 command 1/0 mail 1/0"

# --- healed: one recovery ----------------------------------------------------------
check "the web server is back" www_start
set +e; "$BIN" once "$POL/notify.lua" 2>"$WORK/heal.log"; rc=$?; set -e
check "healed: renewed" grep -q "event=renewed.*name=$NAME" "$WORK/heal.log"
check "healed: the recovery is logged" grep -q "event=notify_recovered kind=renew name=$NAME" "$WORK/heal.log"
check "healed: the record is gone from storage" test ! -e "$alert_record"
set +e; "$BIN" once "$POL/notify.lua" 2>"$WORK/after.log"; rc=$?; set -e
counts=$(all_counts)
check "exactly one recovery per notifier ($counts)" test "$counts" = "webhook 1/1 command 1/1 mail 1/1"
check "no expiring notice (the certificate is far from expiry)" test "$(notices /ok expiring expiring)" -eq 0

# --- what arrived ----------------------------------------------------------------
first=$(grep -m1 "^/ok " "$HOOKS" | cut -d' ' -f2-)
printf '%s' "$first" > "$WORK/first.json"
check "webhook payload: event, kind, name, message, host, since" test "$(json_eval "$WORK/first.json" \
  "v.event .. ' ' .. v.kind .. ' ' .. v.name .. ' ' .. tostring(v.message ~= nil) .. ' ' .. tostring(v.host ~= nil) .. ' ' .. tostring(v.since ~= nil)")" \
  = "failure renew $NAME true true true"
head -n1 "$NOTIFY_COMMAND_OUT" > "$WORK/cmd.json"
check "command stdin: the same JSON payload" test "$(json_eval "$WORK/cmd.json" "v.event .. ' ' .. v.name")" = "failure $NAME"
mail=$(grep -l "^Subject: certmaint: renewal failed" "$WORK"/mail/msg.?????? | head -n1)
check "mail: To header" grep -qx "To: ops@example.test" "$mail"
check "mail: From header" grep -qx "From: certmaint@example.test" "$mail"
check "mail: Subject names the name" grep -q "^Subject: certmaint: renewal failed for $NAME on " "$mail"
check "mail: sendmail ran as -t -i" grep -qx -- "-t -i" "$mail.args"
check "mail: the body says what failed" grep -q "^message: " "$mail"

# errors in the logs are the failures this test causes, and nothing else
unexpected=$(cat "$WORK"/daemon.log "$WORK"/fail?.log "$WORK"/heal.log "$WORK"/after.log "$WORK"/obtain.log |
  grep "level=error" | grep -Ev "event=(renew_failed|hook_failed|notify_failed|acme_[a-z_]+|order_failed|challenge_failed|authorization_failed|issuer_failed)( |$)" || true)
check "no unexpected error line" test -z "$unexpected"
[ -n "$unexpected" ] && echo "$unexpected" | head -5
finish
