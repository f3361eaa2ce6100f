#!/usr/bin/env bash
# ARI (RFC 9773) end to end: certmaint.issuer.acme against a real Pebble
# (http-01 really validated), whose directory is served by a stub on
# 127.0.0.1 that adds renewalInfo (Debian's Pebble 2.4 has none) and answers
# it: the first certificate's window is in the past ("renew now", how a CA
# signals a revocation), every later one's 40 minutes ahead (inside its 1 h life). The daemon obtains,
# fetches the window, renews at once, sends no storm of renewals or fetches
# (the stub's Retry-After), keeps the window in the .json where certmagic does.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --validity 3600 --nosleep
curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_DIR_URL" > "$WORK/pebble-dir.json"
stub_log=$WORK/stub.log
: > "$stub_log"
# the stub: Pebble's directory plus renewalInfo, and the renewalInfo answers
(
  [ -n "${CERTMAINT_HOST_PRELOAD:-}" ] && export LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0
  exec lua5.4 -e "
    local core = require 'certmaint.core'
    local loop = require 'certmaint.loop'
    local rfc3339 = require 'certmaint.rfc3339'
    local f = assert(io.open('$WORK/pebble-dir.json')); local dir = assert(core.json_decode(f:read('a'))); f:close()
    local log = assert(io.open('$stub_log', 'a')); log:setvbuf('line')
    local first
    local id, port
    id, port = assert(loop.serve({ listen = '127.0.0.1:0' }, function(req)
      if req.path == '/dir' then
        dir.renewalInfo = 'http://127.0.0.1:' .. port .. '/ari'
        return { status = 200, headers = { ['content-type'] = 'application/json' }, body = core.json_encode(dir) }
      end
      local cert_id = req.path:match('^/ari/(.+)$')
      if not cert_id then return nil end
      first = first or cert_id
      local now = os.time()
      local s, e = now + 2400, now + 2600
      if cert_id == first then s, e = now - 7200, now - 3600 end
      log:write('ari ', cert_id, cert_id == first and ' past' or ' future', '\n')
      return { status = 200, headers = { ['content-type'] = 'application/json', ['retry-after'] = '2' },
        body = core.json_encode { suggestedWindow = { start = rfc3339.iso(s), ['end'] = rfc3339.iso(e) },
          explanationURL = 'https://ca.example.test/why' } }
    end))
    log:write('port ', port, '\n')
    loop.spawn(function() while true do loop.sleep(3600) end end) -- a timer: the loop waits, never stalls
    loop.run()"
) &
stub=$!; PIDS+=("$stub")
wait_for 10 grep -q '^port ' "$stub_log"
export ARI_DIR_URL="http://127.0.0.1:$(awk '/^port /{print $2}' "$stub_log")/dir"

policy=$POL/acme_ari.lua
log=$WORK/run.log
mkdir -p "$CERTMAINT_DATA"
"$BIN" run "$policy" 2>"$log" &
pid=$!; PIDS+=("$pid")
check "obtains the certificate from Pebble" wait_for 30 grep -q 'event=obtained' "$log"
check "fetches its window from renewalInfo (in the past) and renews at once" \
  wait_for 30 grep -q 'event=renewed' "$log"
check "fetches the new certificate's window (40 minutes ahead)" wait_for 20 grep -q ' future$' "$stub_log"
sleep 4 # a few renew passes (1 s each) more: nothing else may happen
kill -TERM "$pid"
set +e; wait "$pid"; rc=$?; set -e
check "SIGTERM: exit status 0" test "$rc" -eq 0
check "Pebble issued two certificates: the first and its ARI replacement, no more ($(pebble_issued))" \
  test "$(pebble_issued)" -eq 2
check "the renewal came from the window (event=renewed once)" test "$(grep -c 'event=renewed' "$log")" -eq 1
past=$(grep -c ' past$' "$stub_log" || true)
future=$(grep -c ' future$' "$stub_log" || true)
check "each window asked for once: the Retry-After (2 s, kept at least 1 min) holds the next fetch ($past, $future)" \
  test "$past" -eq 1 -a "$future" -eq 1
stub_port=$(awk '/^port /{print $2}' "$stub_log")
meta=$CERTMAINT_DATA/certificates/127.0.0.1-$stub_port-dir/ari.example.test/ari.example.test.json
check "the window is kept in the .json as certmagic keeps it (issuer_data.renewal_info)" \
  test "$(json_eval "$meta" 'v.issuer_data.renewal_info.explanationURL .. " " .. type(v.issuer_data.renewal_info.suggestedWindow.start)')" = "https://ca.example.test/why string"
check "the ACME order sent replaces (or was retried without it): no renewal failed" \
  bash -c "! grep -q 'event=renew_failed' $log"
status=$("$BIN" status "$policy" --json)
at=$(lua54 -e "local core = require 'certmaint.core'; local v = core.json_decode(io.read('a')); print(v[1].renewal_at)" <<<"$status")
check "status reads the stored window: the renewal is inside it, not at the 1/2 rule's 30 min or the floor ($at)" \
  lua54 -e "local r = require 'certmaint.rfc3339'; local t = r.parse('$at'); os.exit(t and t > os.time() + 2300 and t < os.time() + 2650 and 0 or 1)"
finish
