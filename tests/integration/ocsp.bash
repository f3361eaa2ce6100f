# A real OCSP responder and a CRL server on 127.0.0.1 for the OCSP integration
# tests (sourced after lib.bash and pebble.bash, not a test itself).
#
# The responder is `openssl ocsp -index ... -port ...` signing as the issuing
# CA (Pebble's intermediate and its key from Pebble's management API, or any
# CA certificate and key given), answering GET and POST. Its index.txt is
# kept in sync with what Pebble issued and revoked (Pebble's log and its
# /cert-status-by-serial), plus the revocations a test asks for. OpenSSL 3.0's
# responder re-reads a changed index before accepting the connection after
# the next one, so each change is followed by one throwaway request (a
# "poke"): the responder keeps listening, no client ever finds the port
# closed. `-port` binds the wildcard address; stubs/bind_loopback.c (an
# LD_PRELOAD shim) keeps it on 127.0.0.1.
#
#   ocsp_env                 reserve the ports (pebble_env) and export
#       OCSP_PORT, OCSP_URL  http://127.0.0.1:PORT, the responder (and the fault servers)
#       CRL_PORT, CRL_URL    http://127.0.0.1:PORT/ca.crl, the CRL server's file
#       OCSP_SPARE_PORT      one more port of this test's block
#       OCSP_DIR             the responder's folder: signer.pem signer.key root.pem index.txt
#   ocsp_pebble_start [pebble_start options]
#                            Pebble with ocspResponderURL=$OCSP_URL, its CA taken as the
#                            signer, the responder started, index sync running
#   ocsp_use_ca CERT KEY [ROOT]  sign as CERT/KEY (ROOT: what verifies CERT; default CERT)
#   ocsp_start [--nmin N] / ocsp_stop / ocsp_running
#                            the responder (nextUpdate = thisUpdate + N minutes, default
#                            $OCSP_NMIN or 1)
#   ocsp_index_add CERT_PEM  list a certificate as good (the Pebble sync does this itself)
#   ocsp_revoke SERIAL [REASON]  mark SERIAL (hex) revoked now; REASON an RFC 5280 name
#                            (keyCompromise, superseded, ...) or none
#   ocsp_query CERT_PEM      the reference client asks the responder: prints good, revoked,
#                            unknown, or "invalid: ..." (not verified)
#   ocsp_check_staple DER CERT_PEM  the reference client verifies a stored response:
#                            prints good/revoked/unknown, "stale", or "invalid: ..."
#   ocsp_fault MODE [ARG]    the responder replaced on OCSP_PORT by stubs/ocsp_http.lua:
#                            garbage | huge BYTES | slow SECONDS | status CODE
#   ocsp_fault_stop / ocsp_fault_kill  SIGTERM / SIGKILL the fault server (kill: mid-request)
#   ocsp_requests            requests the responder and fault servers received so far
#   crl_server_start / crl_server_stop  serve $OCSP_DIR/crl/ on CRL_PORT
#   crl_make CERT KEY OUT SECONDS [SERIAL[:REASON]]...
#                            a DER CRL signed by CERT/KEY (openssl ca -gencrl), nextUpdate
#                            in SECONDS, listing the serials (hex)
#   crl_publish FILE         serve FILE as $CRL_URL (atomic rename)
#   crl_requests             GETs the CRL server answered so far
#   cert_serial PEM_FILE     the first certificate's serial, lower-case hex

command -v openssl >/dev/null && command -v flock >/dev/null && command -v cc >/dev/null || {
  echo "ocsp.bash: openssl, flock (util-linux) and cc are needed (scripts/deps.sh installs them)" >&2
  exit 1
}

OCSP_DIR=$WORK/ocsp
OCSP_NMIN=${OCSP_NMIN:-1}
OCSP_PID= OCSP_FAULT_PID= OCSP_SYNC_PID= CRL_PID=
OCSP_STUB=$SRC/tests/integration/stubs/ocsp_http.lua
mkdir -p "$OCSP_DIR/crl"
: > "$OCSP_DIR/certs.tsv"    # SERIAL \t expiry \t subject  (every certificate the responder knows)
: > "$OCSP_DIR/revoked.tsv"  # SERIAL \t revocation field   (time[,reason])
: > "$OCSP_DIR/responder.log"

ocsp_env() {
  pebble_env || return 1
  read -r OCSP_PORT CRL_PORT OCSP_SPARE_PORT _ <<<"$PEBBLE_SPARE_PORTS"
  export OCSP_PORT CRL_PORT OCSP_SPARE_PORT OCSP_DIR
  export OCSP_URL=http://127.0.0.1:$OCSP_PORT CRL_URL=http://127.0.0.1:$CRL_PORT/ca.crl
  if [ ! -f "$OCSP_DIR/bind_loopback.so" ]; then
    cc -shared -fPIC -O2 -o "$OCSP_DIR/bind_loopback.so" "$SRC/tests/integration/stubs/bind_loopback.c" -ldl ||
      { echo "ocsp.bash: cannot build stubs/bind_loopback.c" >&2; return 1; }
  fi
}

# serial in the index's form: upper-case hex, no leading zeros (openssl compares that way)
ocsp_serial_key() {
  local s=${1^^}
  s=${s#0X}
  while [ "${s:0:1}" = 0 ] && [ ${#s} -gt 1 ]; do s=${s:1}; done
  [ $(( ${#s} % 2 )) = 1 ] && s=0$s  # openssl ca wants whole octets
  echo "$s"
}
cert_serial() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=//' | tr 'A-F' 'a-f'; }
ocsp_utc_field() { date -u -d "$1" +%y%m%d%H%M%SZ; }

ocsp_use_ca() {
  cp "$1" "$OCSP_DIR/signer.pem"
  (umask 077; cp "$2" "$OCSP_DIR/signer.key")
  cp "${3:-$1}" "$OCSP_DIR/root.pem"
}

# index.txt from certs.tsv + revoked.tsv, written atomically; a poke makes a
# running responder take it (not with "quiet": a change of expiry or subject
# only, which no answer depends on; the responder takes it with the next
# request). Serialised with the sync loop by a lock.
ocsp_index_write() { # [quiet]
  (
    flock 9
    awk -F'\t' -v revoked="$OCSP_DIR/revoked.tsv" 'BEGIN {
        OFS = "\t"
        while ((getline line < revoked) > 0) { split(line, f, "\t"); rev[f[1]] = f[2] }
      }
      { if ($1 in rev) print "R", $2, rev[$1], $1, "unknown", $3; else print "V", $2, "", $1, "unknown", $3 }' \
      "$OCSP_DIR/certs.tsv" > "$OCSP_DIR/index.txt.new"
    if cmp -s "$OCSP_DIR/index.txt.new" "$OCSP_DIR/index.txt"; then
      rm -f "$OCSP_DIR/index.txt.new"
    else
      # the responder sees a change by stat (mtime in whole seconds, inode): two
      # writes in one second onto a recycled inode would look unchanged, so
      # each index gets an mtime of its own, a generation count
      gen=$(( $(cat "$OCSP_DIR/index.gen" 2>/dev/null || echo 0) + 1 ))
      echo "$gen" > "$OCSP_DIR/index.gen"
      touch -m -d "@$((1500000000 + gen))" "$OCSP_DIR/index.txt.new"
      mv "$OCSP_DIR/index.txt.new" "$OCSP_DIR/index.txt"
      [ -n "$OCSP_PID" ] && [ "${1:-}" != quiet ] && ocsp_poke
    fi
    true
  ) 9>"$OCSP_DIR/index.lock"
}

# one request whose answer nobody reads: the responder reloads a changed
# index after it (curl with a request made once: a few ms)
ocsp_poke() {
  [ -f "$OCSP_DIR/poke.der" ] ||
    openssl ocsp -issuer "$OCSP_DIR/signer.pem" -serial 0x1 -no_nonce -reqout "$OCSP_DIR/poke.der" >/dev/null 2>&1
  curl -s -o /dev/null --max-time 5 --data-binary @"$OCSP_DIR/poke.der" \
    -H 'Content-Type: application/ocsp-request' "$OCSP_URL/" || true
}

ocsp_index_add() { # CERT_PEM [no-write]
  local serial end subject
  serial=$(ocsp_serial_key "$(cert_serial "$1")") || return 1
  grep -q "^$serial	" "$OCSP_DIR/certs.tsv" && return 0
  end=$(ocsp_utc_field "$(openssl x509 -in "$1" -noout -enddate | sed 's/^notAfter=//')")
  subject=$(openssl x509 -in "$1" -noout -subject -nameopt compat | sed 's/^subject=//')
  printf '%s\t%s\t%s\n' "$serial" "$end" "${subject:-/CN=unnamed}" >> "$OCSP_DIR/certs.tsv"
  [ "${2:-}" = no-write ] || ocsp_index_write
}

ocsp_revoke() { # SERIAL [REASON]
  local serial field
  serial=$(ocsp_serial_key "$1")
  field=$(date -u +%y%m%d%H%M%SZ)${2:+,$2}
  (flock 9; printf '%s\t%s\n' "$serial" "$field" >> "$OCSP_DIR/revoked.tsv") 9>"$OCSP_DIR/index.lock"
  ocsp_index_write
}

# Pebble's reason codes as the index names them (RFC 5280 CRLReason)
ocsp_reason_name() {
  case $1 in
    0) echo unspecified ;; 1) echo keyCompromise ;; 2) echo CACompromise ;; 3) echo affiliationChanged ;;
    4) echo superseded ;; 5) echo cessationOfOperation ;; 6) echo certificateHold ;; 8) echo removeFromCRL ;;
    *) echo unspecified ;;
  esac
}

ocsp_pebble_status() { curl -sf --max-time 5 --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/cert-status-by-serial/$1"; }

# What Pebble issued becomes good in the index the moment Pebble logs it
# (the client is still fetching the certificate, so its first question finds
# it listed), with the real expiry and subject from /cert-status-by-serial
# right after; what was revoked through ACME becomes revoked with Pebble's
# time and reason. The background sync follows Pebble's log (tail -F).
ocsp_sync_issued() { # SERIAL... as Pebble logs them
  local serial key json pem end subject
  (flock 9
   for serial in "$@"; do
     key=$(ocsp_serial_key "$serial")
     grep -q "^$key	" "$OCSP_DIR/certs.tsv" ||
       printf '%s\t491231235959Z\t/CN=pebble-%s\n' "$key" "$serial" >> "$OCSP_DIR/certs.tsv"
   done) 9>"$OCSP_DIR/index.lock"
  ocsp_index_write
  for serial in "$@"; do
    key=$(ocsp_serial_key "$serial")
    json=$(ocsp_pebble_status "$serial") || continue
    pem=$OCSP_DIR/pebble-$serial.pem
    sed -n 's/.*"Certificate": *"\([^"]*\)".*/\1/p' <<<"$json" | sed 's/\\n/\n/g' > "$pem"
    end=$(ocsp_utc_field "$(openssl x509 -in "$pem" -noout -enddate 2>/dev/null | sed 's/^notAfter=//')") || continue
    subject=$(openssl x509 -in "$pem" -noout -subject -nameopt compat | sed 's/^subject=//')
    (flock 9
     awk -F'\t' -v k="$key" -v e="$end" -v s="${subject:-/CN=pebble-$serial}" 'BEGIN { OFS = "\t" }
       $1 == k { $2 = e; $3 = s } { print }' "$OCSP_DIR/certs.tsv" > "$OCSP_DIR/certs.tsv.new" &&
       mv "$OCSP_DIR/certs.tsv.new" "$OCSP_DIR/certs.tsv") 9>"$OCSP_DIR/index.lock"
  done
  ocsp_index_write quiet
}

# Pebble logs no serial for a revoke-cert request, and logs it before the
# handler runs: every known good serial is asked about until one turns up
# revoked (for up to 3 s; a refused revocation revokes nothing).
ocsp_sync_revoked() {
  local i s json at reason found=0
  for i in $(seq 1 30); do
    for s in $(cut -f1 "$OCSP_DIR/certs.tsv"); do
      grep -q "^$s	" "$OCSP_DIR/revoked.tsv" && continue
      json=$(ocsp_pebble_status "$s") || continue
      grep -q '"Status": *"Revoked"' <<<"$json" || continue
      at=$(sed -n 's/.*"RevokedAt": *"\([0-9-]* [0-9:]*\).*/\1/p' <<<"$json")
      reason=$(sed -n 's/.*"Reason": *\([0-9]*\).*/\1/p' <<<"$json")
      (flock 9; printf '%s\t%s,%s\n' "$s" "$(ocsp_utc_field "${at:-now}")" "$(ocsp_reason_name "${reason:-0}")" \
        >> "$OCSP_DIR/revoked.tsv") 9>"$OCSP_DIR/index.lock"
      found=1
    done
    [ $found = 1 ] && break
    sleep 0.1
  done
  [ $found = 1 ] && ocsp_index_write
  true
}

ocsp_sync_start() {
  [ -n "$OCSP_SYNC_PID" ] && return 0
  ( set +e
    # --pid: tail ends with the test even when this subshell is killed first
    tail --pid=$$ -n +1 -F "$PEBBLE_LOG" 2>/dev/null | while IFS= read -r line; do
      # every line already there in one go: one index write for a burst of issuances
      batch=("$line")
      while read -r -t 0 && IFS= read -r line; do batch+=("$line"); done
      serials=() revoke=0
      for line in "${batch[@]}"; do
        case $line in
          *"Issued certificate serial "*) s=${line#*Issued certificate serial }; serials+=("${s%% *}") ;;
          *revoke-cert*) revoke=1 ;;
        esac
      done
      [ ${#serials[@]} -gt 0 ] && ocsp_sync_issued "${serials[@]}"
      [ $revoke = 1 ] && ocsp_sync_revoked
    done ) >>"$OCSP_DIR/sync.log" 2>&1 &
  OCSP_SYNC_PID=$!
}

ocsp_listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

ocsp_start() {
  local nmin=$OCSP_NMIN
  [ "${1:-}" = --nmin ] && nmin=$2
  [ -n "$OCSP_PID" ] && return 0
  [ -f "$OCSP_DIR/index.txt" ] || ocsp_index_write
  echo "unique_subject = no" > "$OCSP_DIR/index.txt.attr"
  LD_PRELOAD=$OCSP_DIR/bind_loopback.so openssl ocsp -index "$OCSP_DIR/index.txt" -port "$OCSP_PORT" \
    -rsigner "$OCSP_DIR/signer.pem" -rkey "$OCSP_DIR/signer.key" -CA "$OCSP_DIR/signer.pem" \
    -nmin "$nmin" -ignore_err >>"$OCSP_DIR/responder.log" 2>&1 &
  OCSP_PID=$!
  wait_for 10 ocsp_listening "$OCSP_PORT" ||
    { echo "ocsp.bash: openssl ocsp did not listen on $OCSP_PORT:" >&2; tail -5 "$OCSP_DIR/responder.log" >&2; return 1; }
}

ocsp_stop_pid() {
  local pid=$1 sig=$2 i
  [ -n "$pid" ] || return 0
  { kill "-$sig" "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true; } 2>/dev/null
}
ocsp_stop() { ocsp_stop_pid "$OCSP_PID" TERM; OCSP_PID=; }
ocsp_running() { [ -n "$OCSP_PID" ] && kill -0 "$OCSP_PID" 2>/dev/null; }

ocsp_pebble_start() {
  ocsp_env || return 1
  pebble_start --ocsp "$OCSP_URL" "$@" || return 1
  curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/intermediates/0" > "$OCSP_DIR/pebble-int.pem" &&
    (umask 077; curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/intermediate-keys/0" > "$OCSP_DIR/pebble-int.key") &&
    pebble_root > "$OCSP_DIR/pebble-root.pem" ||
    { echo "ocsp.bash: Pebble's management API gave no intermediate, key or root" >&2; return 1; }
  ocsp_use_ca "$OCSP_DIR/pebble-int.pem" "$OCSP_DIR/pebble-int.key" "$OCSP_DIR/pebble-root.pem"
  ocsp_start || return 1
  ocsp_sync_start
}

# the status word of `openssl ocsp` output for FILE, or why not
ocsp_status_word() { # OUTPUT CERT
  local out=$1 line
  if ! grep -q '^Response verify OK' <<<"$out"; then
    echo "invalid: $(grep -v '^[[:space:]]' <<<"$out" | tr '\n' ' ' | cut -c1-200)"
    return 0
  fi
  grep -q 'WARNING: Status times invalid' <<<"$out" && { echo stale; return 0; }
  line=$(grep -F "$2: " <<<"$out" | head -1)
  echo "${line##*: }"
}

ocsp_query() {
  local out
  out=$(openssl ocsp -issuer "$OCSP_DIR/signer.pem" -cert "$1" -url "$OCSP_URL" \
    -CAfile "$OCSP_DIR/root.pem" -no_nonce -timeout 5 2>&1) || true
  ocsp_status_word "$out" "$1"
}

ocsp_check_staple() {
  local out
  out=$(openssl ocsp -respin "$1" -issuer "$OCSP_DIR/signer.pem" -cert "$2" \
    -CAfile "$OCSP_DIR/root.pem" -no_nonce 2>&1) || true
  ocsp_status_word "$out" "$2"
}

# lua5.4 on certmaint's module as lib.bash's lua54 runs it, exec'd so that $! is its pid
ocsp_lua_exec() {
  if [ -n "${CERTMAINT_HOST_PRELOAD:-}" ]; then
    LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0 exec lua5.4 "$@"
  fi
  exec lua5.4 "$@"
}

ocsp_fault() { # MODE [ARG]
  ocsp_fault_stop
  ocsp_stop
  (ocsp_lua_exec "$OCSP_STUB" "$OCSP_PORT" "$@") >>"$OCSP_DIR/fault.log" 2>&1 &
  OCSP_FAULT_PID=$!
  wait_for 10 ocsp_listening "$OCSP_PORT" ||
    { echo "ocsp.bash: the fault server ($*) did not listen on $OCSP_PORT" >&2; tail -5 "$OCSP_DIR/fault.log" >&2; return 1; }
}
ocsp_fault_stop() { ocsp_stop_pid "$OCSP_FAULT_PID" TERM; OCSP_FAULT_PID=; }
ocsp_fault_kill() { ocsp_stop_pid "$OCSP_FAULT_PID" KILL; OCSP_FAULT_PID=; }
ocsp_requests() {
  local a b
  a=$(grep -c 'Received request' "$OCSP_DIR/responder.log" 2>/dev/null || true)
  b=$(grep -c '^[a-z]* [A-Z]* [0-9]* [0-9]*$' "$OCSP_DIR/fault.log" 2>/dev/null || true)
  echo $(( ${a:-0} + ${b:-0} ))
}

crl_server_start() {
  [ -n "$CRL_PID" ] && return 0
  (ocsp_lua_exec "$OCSP_STUB" "$CRL_PORT" files "$OCSP_DIR/crl") >>"$OCSP_DIR/crl.log" 2>&1 &
  CRL_PID=$!
  wait_for 10 ocsp_listening "$CRL_PORT" ||
    { echo "ocsp.bash: the CRL server did not listen on $CRL_PORT" >&2; tail -5 "$OCSP_DIR/crl.log" >&2; return 1; }
}
crl_server_stop() { ocsp_stop_pid "$CRL_PID" TERM; CRL_PID=; }
crl_publish() { cp "$1" "$OCSP_DIR/crl/.ca.crl.tmp" && mv "$OCSP_DIR/crl/.ca.crl.tmp" "$OCSP_DIR/crl/ca.crl"; }
crl_requests() { grep -c '^files GET' "$OCSP_DIR/crl.log" 2>/dev/null || true; }

crl_make() { # CERT KEY OUT SECONDS [SERIAL[:REASON]]...
  local cert=$1 key=$2 out=$3 secs=$4 d e s reason now
  shift 4
  d=$(mktemp -d "$OCSP_DIR/ca.XXXXXX")
  : > "$d/index.txt"
  now=$(date -u +%y%m%d%H%M%SZ)
  for e in "$@"; do
    s=$(ocsp_serial_key "${e%%:*}"); reason=
    [ "$e" != "${e#*:}" ] && reason=,${e#*:}
    printf 'R\t491231235959Z\t%s%s\t%s\tunknown\t/CN=revoked-%s\n' "$now" "$reason" "$s" "$s" >> "$d/index.txt"
  done
  echo "unique_subject = no" > "$d/index.txt.attr"
  echo 01 > "$d/crlnumber"
  cat > "$d/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $d/index.txt
crlnumber = $d/crlnumber
default_md = sha256
EOF
  openssl ca -config "$d/ca.cnf" -gencrl -keyfile "$key" -cert "$cert" -crlsec "$secs" -out "$d/crl.pem" \
    >"$d/out" 2>&1 && openssl crl -in "$d/crl.pem" -outform DER -out "$out" ||
    { echo "crl_make: openssl ca -gencrl failed:" >&2; cat "$d/out" >&2; return 1; }
}

ocsp_cleanup() {
  ocsp_stop_pid "$OCSP_SYNC_PID" TERM; OCSP_SYNC_PID=
  ocsp_stop; ocsp_fault_stop; crl_server_stop
}
trap 'ocsp_cleanup; pebble_cleanup; cleanup' EXIT
