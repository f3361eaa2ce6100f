# Real Pebble + pebble-challtestsrv on 127.0.0.1 for the ACME integration tests
# (sourced after lib.bash, not a test itself). Validation is real: Pebble asks
# pebble-challtestsrv (its DNS) where a name lives, every name answers
# 127.0.0.1, and Pebble fetches http://NAME:$PEBBLE_HTTP_PORT/... from whoever
# listens there. PEBBLE_VA_ALWAYS_VALID is never set.
#
#   pebble_start [--validity SECONDS] [--nosleep] [--nonce-reject PCT]
#                [--authz-reuse PCT] [--eab KID:HMAC_B64URL]... [--eab-required]
#                [--ocsp URL] [--va-sleep MAX_SECONDS]
#     Starts both servers (again after pebble_stop/pebble_kill: same ports,
#     same options unless new ones are given; Pebble's state and roots are new).
#     Exports:
#       PEBBLE_DIR_URL    https://127.0.0.1:PORT/dir
#       PEBBLE_CA_BUNDLE  PEM of the TLS certificate of Pebble's listeners
#       PEBBLE_MGMT       https://127.0.0.1:PORT (roots, cert status)
#       CHALLTEST_MGMT    http://127.0.0.1:PORT (set-txt, clear-txt)
#       PEBBLE_DNS        127.0.0.1:PORT (challtestsrv's DNS, Pebble's resolver)
#       PEBBLE_HTTP_PORT  the port Pebble validates http-01 on (a client listens here)
#       PEBBLE_TLS_PORT   the port Pebble validates tls-alpn-01 on
#       PEBBLE_SPARE_PORTS  four more ports of this test's block (stubs, listeners)
#       PEBBLE_ISSUER_KEY  certmagic's storage key of this CA: 127.0.0.1-PORT-dir
#       PEBBLE_LOG, CHALLTEST_LOG  the servers' logs (appended across restarts)
#   pebble_root / pebble_intermediate  print the current root / intermediate PEM
#   pebble_env      only reserve the ports and export the variables (nothing runs)
#   pebble_stop     SIGTERM both and wait;  pebble_kill  SIGKILL Pebble only
#   pebble_pause / pebble_resume  SIGSTOP / SIGCONT Pebble
#   pebble_issued   number of "Issued certificate" lines in PEBBLE_LOG
#   pebble_orders   number of orders Pebble created (its "Added order" lines)
#   challtest_set_txt NAME VALUE / challtest_clear_txt NAME   dns-01 records
#
# Ports: each sourcing script reserves its own block of 10 ports below the
# ephemeral range (a lock directory per block under /tmp/certmaint-ports, held
# while the script lives), so parallel ctest runs never collide.

command -v pebble >/dev/null && command -v pebble-challtestsrv >/dev/null || {
  echo "pebble.bash: pebble and pebble-challtestsrv are not installed (scripts/deps.sh installs them)" >&2
  exit 1
}

PEBBLE_WORK=$WORK/pebble
PEBBLE_PORT_LOCKS=/tmp/certmaint-ports
PEBBLE_PID= CHALLTEST_PID= PEBBLE_PORT_BLOCK=
PEBBLE_OPTS=()
mkdir -p "$PEBBLE_WORK"

# A block is ours when mkdir of its lock succeeds (atomic); a lock whose owner
# died is taken over. All 10 ports must also be free right now.
pebble_reserve_ports() {
  mkdir -p "$PEBBLE_PORT_LOCKS"
  local try base lock owner p busy listening
  listening=$(ss -Hltnu 2>/dev/null | awk '{print $5}' | sed 's/.*://' | sort -u)
  for try in $(seq 1 200); do
    base=$((20000 + (RANDOM % 1200) * 10))
    lock=$PEBBLE_PORT_LOCKS/$base
    if ! mkdir "$lock" 2>/dev/null; then
      owner=$(cat "$lock/pid" 2>/dev/null || true)
      if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null && rm -rf "$lock" && mkdir "$lock" 2>/dev/null; then :; else continue; fi
    fi
    echo $$ > "$lock/pid"
    busy=0
    for p in $(seq "$base" $((base + 9))); do
      if grep -qx "$p" <<<"$listening"; then busy=1; break; fi
    done
    if [ $busy = 1 ]; then rm -rf "$lock"; continue; fi
    PEBBLE_PORT_BLOCK=$base
    return 0
  done
  echo "pebble.bash: no free block of 10 ports in 20000-31999 after 200 tries" >&2
  return 1
}

pebble_make_tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=pebble test listener" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$PEBBLE_WORK/tls.key" -out "$PEBBLE_WORK/tls.pem" 2>"$PEBBLE_WORK/openssl.err" || {
    echo "pebble.bash: openssl could not make Pebble's TLS certificate:" >&2
    cat "$PEBBLE_WORK/openssl.err" >&2
    return 1
  }
  chmod 600 "$PEBBLE_WORK/tls.key"
}

pebble_fail_start() {
  echo "pebble.bash: $1" >&2
  echo "--- last lines of $PEBBLE_LOG" >&2; tail -n 20 "$PEBBLE_LOG" >&2 2>/dev/null || true
  echo "--- last lines of $CHALLTEST_LOG" >&2; tail -n 10 "$CHALLTEST_LOG" >&2 2>/dev/null || true
  pebble_stop
  return 1
}

# pebble_env: reserve this test's ports, make the TLS certificate and export the
# variables, without starting anything (a client can be pointed at a Pebble
# that is not up yet). pebble_start calls it.
pebble_env() {
  if [ -z "$PEBBLE_PORT_BLOCK" ]; then
    pebble_reserve_ports || return 1
    pebble_make_tls_cert || return 1
  fi
  local b=$PEBBLE_PORT_BLOCK
  export PEBBLE_DIR_URL=https://127.0.0.1:$b/dir
  export PEBBLE_CA_BUNDLE=$PEBBLE_WORK/tls.pem
  export PEBBLE_MGMT=https://127.0.0.1:$((b + 1))
  export PEBBLE_HTTP_PORT=$((b + 2)) PEBBLE_TLS_PORT=$((b + 3))
  export PEBBLE_DNS=127.0.0.1:$((b + 4))
  export CHALLTEST_MGMT=http://127.0.0.1:$((b + 5))
  export PEBBLE_SPARE_PORTS="$((b + 6)) $((b + 7)) $((b + 8)) $((b + 9))"
  export PEBBLE_ISSUER_KEY=127.0.0.1-$b-dir
  export PEBBLE_LOG=$PEBBLE_WORK/pebble.log CHALLTEST_LOG=$PEBBLE_WORK/challtestsrv.log
}

pebble_start() {
  [ $# -gt 0 ] && PEBBLE_OPTS=("$@")
  local validity="" nosleep=0 nonce_reject="" authz_reuse="" eab_required=false ocsp="" eab_keys="" va_sleep=""
  set -- "${PEBBLE_OPTS[@]}"
  while [ $# -gt 0 ]; do
    case $1 in
      --validity) validity=$2; shift 2 ;;
      --nosleep) nosleep=1; shift ;;
      --nonce-reject) nonce_reject=$2; shift 2 ;;
      --authz-reuse) authz_reuse=$2; shift 2 ;;
      --eab) eab_keys+="${eab_keys:+,}\"${2%%:*}\": \"${2#*:}\""; shift 2 ;;
      --eab-required) eab_required=true; shift ;;
      --ocsp) ocsp=$2; shift 2 ;;
      --va-sleep) va_sleep=$2; shift 2 ;;
      *) echo "pebble_start: unknown option '$1'" >&2; return 2 ;;
    esac
  done
  pebble_env || return 1
  local b=$PEBBLE_PORT_BLOCK
  local validity_member=""
  [ -n "$validity" ] && validity_member=", \"certificateValidityPeriod\": $validity"

  cat > "$PEBBLE_WORK/config.json" <<JSON
{
  "pebble": {
    "listenAddress": "127.0.0.1:$b",
    "managementListenAddress": "127.0.0.1:$((b + 1))",
    "certificate": "$PEBBLE_WORK/tls.pem",
    "privateKey": "$PEBBLE_WORK/tls.key",
    "httpPort": $PEBBLE_HTTP_PORT,
    "tlsPort": $PEBBLE_TLS_PORT,
    "ocspResponderURL": "$ocsp",
    "externalAccountBindingRequired": $eab_required,
    "externalAccountMACKeys": { $eab_keys }$validity_member
  }
}
JSON
  # challtestsrv keeps running across a Pebble restart (pebble_kill)
  if [ -z "$CHALLTEST_PID" ]; then
    pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 "$PEBBLE_DNS" \
      -http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$((b + 5))" \
      >>"$CHALLTEST_LOG" 2>&1 &
    CHALLTEST_PID=$!
    wait_for 10 curl -s -o /dev/null "$CHALLTEST_MGMT/" ||
      { pebble_fail_start "pebble-challtestsrv did not answer on $CHALLTEST_MGMT within 10 s"; return 1; }
  fi

  # env -u: whatever the caller's environment holds, validation stays real
  env -u PEBBLE_VA_ALWAYS_VALID \
    PEBBLE_VA_NOSLEEP=$nosleep \
    ${nonce_reject:+PEBBLE_WFE_NONCEREJECT=$nonce_reject} \
    ${authz_reuse:+PEBBLE_AUTHZREUSE=$authz_reuse} \
    ${va_sleep:+PEBBLE_VA_SLEEPTIME=$va_sleep} \
    pebble -config "$PEBBLE_WORK/config.json" -dnsserver "$PEBBLE_DNS" >>"$PEBBLE_LOG" 2>&1 &
  PEBBLE_PID=$!
  wait_for 15 curl -sf -o /dev/null --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_DIR_URL" ||
    { pebble_fail_start "Pebble's directory $PEBBLE_DIR_URL did not answer within 15 s (pid $PEBBLE_PID)"; return 1; }
  wait_for 5 curl -sf -o /dev/null --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/roots/0" ||
    { pebble_fail_start "Pebble's management API $PEBBLE_MGMT did not answer within 5 s"; return 1; }
  return 0
}

pebble_stop_pid() {
  local pid=$1 sig=$2 i
  [ -n "$pid" ] || return 0
  # the braces keep bash's "Killed" job report out of the test's output
  { kill -CONT "$pid" 2>/dev/null || return 0  # a paused Pebble gets the signal too
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true; } 2>/dev/null
}
pebble_stop() {
  pebble_stop_pid "$PEBBLE_PID" TERM; PEBBLE_PID=
  pebble_stop_pid "$CHALLTEST_PID" TERM; CHALLTEST_PID=
}
pebble_kill() { pebble_stop_pid "$PEBBLE_PID" KILL; PEBBLE_PID=; }
# SIGSTOP / SIGCONT: Pebble keeps its state but answers nothing meanwhile
pebble_pause() { kill -STOP "$PEBBLE_PID"; }
pebble_resume() { kill -CONT "$PEBBLE_PID"; }

pebble_root() { curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/roots/0"; }
pebble_intermediate() { curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/intermediates/0"; }
pebble_issued() { grep -c "Issued certificate serial" "$PEBBLE_LOG" || true; }
pebble_orders() { grep -c "Added order" "$PEBBLE_LOG" || true; }

challtest_set_txt() {
  curl -sf -o /dev/null -d "{\"host\":\"_acme-challenge.${1%.}.\",\"value\":\"$2\"}" "$CHALLTEST_MGMT/set-txt"
}
challtest_clear_txt() {
  curl -sf -o /dev/null -d "{\"host\":\"_acme-challenge.${1%.}.\"}" "$CHALLTEST_MGMT/clear-txt"
}

pebble_cleanup() {
  pebble_stop
  [ -n "$PEBBLE_PORT_BLOCK" ] && rm -rf "${PEBBLE_PORT_LOCKS:?}/$PEBBLE_PORT_BLOCK"
  PEBBLE_PORT_BLOCK=
}
# lib.bash's trap removes $WORK; the servers and the port lock go first
trap 'pebble_cleanup; cleanup' EXIT
