# Three `certmaint run` members sharing one storage, against a real Pebble
# (sourced after lib.bash, pebble.bash and, for etcd, etcd.bash; not a test
# itself). The members run tests/integration/policies/cluster_member.lua:
# member 1 alone listens on Pebble's httpPort and answers from storage,
# members 2 and 3 listen where Pebble never asks.
#
#   CLUSTER_NAMES           a dozen names, one certificate each
#   cluster_env STORAGE     "file" (SHARED_DATA) or "etcd" (ETCD_URL): export the
#                           members' environment (call after pebble_start/etcd_env)
#   member_start I / member_stop I (SIGTERM, its exit status) / member_kill I (SIGKILL)
#   member_pause I / member_resume I (SIGSTOP / SIGCONT)
#   MEMBER_PID[I], MEMBER_LOG[I]
#   member_events I EVENTS NAME   the member's log lines for NAME with event in EVENTS
#                                 (an ERE alternation: "obtained|renewed")
#   member_last_serial I NAME     the serial of the member's last obtained/renewed/reloaded NAME
#   member_status_serials I       "name serial" lines of `certmaint status --json` run as member I
#   cluster_issuances             Pebble's issuances so far: "epoch name serial" lines, oldest
#                                 first (names from Pebble's management API, by serial)
#   cluster_issued_at_least N     every name issued at least N times
#   cluster_duplicates [NAMES]    issuances of one name less than CLUSTER_ROUND_GAP seconds
#                                 after the previous one (NAMES, space-separated: left out)
#   cluster_lock_holders          "name pid" for each certificate lock held now
#   cluster_catch_lock_holder     (below) a lock holder caught with Pebble paused
#   cluster_kill_lock_holder      wait (up to 60 s) for member 2 or 3 to hold the lock
#                                 of a name it is about to renew, SIGKILL it; sets
#                                 KILLED_MEMBER KILLED_NAME KILLED_AT (epoch, ns) and
#                                 KILLED_IN_FLIGHT (every renewal it had queued, not done)
#   cluster_handover_seconds      wait until a surviving member logs KILLED_NAME done
#                                 again, print the seconds since KILLED_AT

CLUSTER_NAMES=$(for i in $(seq -w 1 12); do printf 'n%s.cluster.test ' "$i"; done)
CLUSTER_NAMES=${CLUSTER_NAMES% }
# 40 s certificates are renewed 20 s after issuance: one name's issuances are
# a round apart, a duplicate is one within half a round
CLUSTER_ROUND_GAP=10
MEMBER_PID=() MEMBER_LOG=()
KILLED_MEMBER= KILLED_NAME= KILLED_AT= KILLED_BEFORE=() KILLED_IN_FLIGHT=
CLUSTER_SERIALS=$WORK/cluster-serials.tsv
: > "$CLUSTER_SERIALS"

cluster_env() {
  export CLUSTER_STORAGE=$1 CLUSTER_NAMES
  local a b
  read -r a b _ <<<"$PEBBLE_SPARE_PORTS"
  export CLUSTER_SILENT_PORTS="$a $b"
  if [ "$1" = file ]; then export SHARED_DATA=$WORK/shared; mkdir -p "$SHARED_DATA"; fi
}

member_start() {
  MEMBER_LOG[$1]=$WORK/member$1.log
  MEMBER=$1 "$BIN" run "$POL/cluster_member.lua" 2>>"${MEMBER_LOG[$1]}" &
  MEMBER_PID[$1]=$!; PIDS+=("$!")
}
member_stop() {
  local rc=0
  kill -TERM "${MEMBER_PID[$1]}" 2>/dev/null || true
  wait "${MEMBER_PID[$1]}" 2>/dev/null || rc=$?
  return $rc
}
member_kill() { { kill -KILL "${MEMBER_PID[$1]}"; wait "${MEMBER_PID[$1]}" || true; } 2>/dev/null; }
member_pause() { kill -STOP "${MEMBER_PID[$1]}"; }
member_resume() { kill -CONT "${MEMBER_PID[$1]}"; }

member_events() { grep -E "event=($2) .*name=$3( |$)" "${MEMBER_LOG[$1]}" || true; }
member_last_serial() {
  member_events "$1" "obtained|renewed|reloaded" "$2" | tail -n 1 | grep -o 'serial=[0-9A-Fa-f]*' | cut -d= -f2
}
member_status_serials() {
  MEMBER=$1 "$BIN" status "$POL/cluster_member.lua" --json >"$WORK/status$1.json" 2>"$WORK/status$1.err" || return 1
  json_eval "$WORK/status$1.json" \
    "(function() local t = {} for _, c in ipairs(v) do t[#t + 1] = c.names[1] .. ' ' .. tostring(c.serial) end table.sort(t) return table.concat(t, '\n') end)()"
}

# the name of the certificate Pebble issued with serial $1 (cached: serials never change)
cluster_serial_name() {
  local name
  name=$(awk -v s="$1" '$1 == s { print $2 }' "$CLUSTER_SERIALS")
  if [ -z "$name" ]; then
    curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/cert-status-by-serial/$1" >"$WORK/cert-status.json" || return 1
    json_eval "$WORK/cert-status.json" 'v.Certificate' >"$WORK/cert-status.pem"
    name=$(openssl x509 -in "$WORK/cert-status.pem" -noout -ext subjectAltName | grep -o 'DNS:[^, ]*' | head -n 1 | cut -d: -f2)
    [ -n "$name" ] || return 1
    printf '%s %s\n' "$1" "$name" >>"$CLUSTER_SERIALS"
  fi
  echo "$name"
}

cluster_issuances() {
  local day time serial
  grep -o '^Pebble [0-9/]* [0-9:]* Issued certificate serial [0-9a-f]*' "$PEBBLE_LOG" |
    while read -r _ day time _ _ _ serial; do
      printf '%s %s %s\n' "$(date -d "${day//\//-} $time" +%s)" "$(cluster_serial_name "$serial")" "$serial"
    done
}

cluster_issued_at_least() {
  local counts n
  counts=$(cluster_issuances | awk '{ c[$2]++ } END { for (n in c) print n, c[n] }')
  for n in $CLUSTER_NAMES; do
    [ "$(awk -v n="$n" '$1 == n { print $2 }' <<<"$counts")" -ge "$1" ] 2>/dev/null || return 1
  done
}

cluster_duplicates() {
  cluster_issuances | sort -k2,2 -k1,1n |
    awk -v gap="$CLUSTER_ROUND_GAP" -v skip=" ${1:-} " '
      index(skip, " " $2 " ") { next }
      $2 == prev && $1 - last < gap { d++ }
      { prev = $2; last = $1 }
      END { print d + 0 }'
}

# certificate locks held now: the file backend's lock files, or etcd's
# <prefix>/locks/locks/issue_cert_<name>.lock keys (storage/etcd.lua's layout), each
# holding a lock record whose owner is "host:pid:hex"
cluster_lock_holders() {
  local f k owner
  if [ "$CLUSTER_STORAGE" = file ]; then
    for f in "$SHARED_DATA"/locks/issue_cert_*.lock; do
      [ -e "$f" ] || continue
      owner=$(grep -o '"owner":"[^"]*"' "$f" 2>/dev/null | head -n 1) || continue
      k=${f##*/issue_cert_}
      printf '%s %s\n' "${k%.lock}" "$(cut -d: -f3 <<<"$owner")"
    done
  else
    # one range request over the locks, keys and values (base64) in pairs
    local kv
    kv=$(etcd_range /certmaint-it/locks/) || return 0
    while read -r k v; do
      k=$(base64 -d <<<"$k"); case $k in */issue_cert_*) ;; *) continue ;; esac
      case $k in *.beat) continue ;; esac
      owner=$(base64 -d <<<"$v" | grep -o '"owner":"[^"]*"' | head -n 1) || continue
      k=${k##*/issue_cert_}
      printf '%s %s\n' "${k%.lock}" "$(cut -d: -f3 <<<"$owner")"
    done <<<"$kv"
  fi
}

# issuances of $1 the members logged (obtained or renewed), all members together
cluster_logged_issuances() {
  local i
  for i in "${!MEMBER_LOG[@]}"; do member_events "$i" "obtained|renewed" "$1"; done | wc -l
}

# A round of renewals holds its locks for well under a second. So Pebble is
# paused (SIGSTOP) just before the next name falls due (20 s after its last
# issuance): the members that take the locks then wait on Pebble, holding
# them, while one holder is chosen. cluster_catch_lock_holder returns with
# Pebble paused and CAUGHT_MEMBER CAUGHT_NAME set: member 2 or 3 holds the
# lock of a name due for renewal (not one that is only reloading what another
# issued); the caller resumes Pebble. Tries for up to 60 s.
CAUGHT_MEMBER= CAUGHT_NAME=
CLUSTER_RENEW_AFTER=20
# the time (epoch) a member last logged NAME obtained or renewed
cluster_last_issued() {
  local i ts
  ts=$(for i in "${!MEMBER_LOG[@]}"; do member_events "$i" "obtained|renewed" "$1"; done |
    grep -o '^ts=[^ ]*' | cut -d= -f2 | sort | tail -n 1)
  date -d "${ts:-1970-01-01T00:00:00Z}" +%s
}
cluster_next_due() {
  local n t min=
  for n in $CLUSTER_NAMES; do
    t=$(cluster_last_issued "$n"); [ -z "$min" ] || [ "$t" -lt "$min" ] && min=$t
  done
  echo $((min + CLUSTER_RENEW_AFTER))
}
cluster_holder_due() {
  local name pid i
  while read -r name pid; do
    [ -n "$name" ] || continue
    for i in 2 3; do
      [ "${MEMBER_PID[$i]}" = "$pid" ] || continue
      [ $(($(date +%s) - $(cluster_last_issued "$name"))) -gt "$CLUSTER_ROUND_GAP" ] || continue
      CAUGHT_MEMBER=$i CAUGHT_NAME=$name
      return 0
    done
  done <<<"$(cluster_lock_holders)"
  return 1
}
cluster_catch_lock_holder() {
  local end=$((SECONDS + 60)) due wait
  while [ $SECONDS -lt $end ]; do
    due=$(cluster_next_due)
    wait=$((due - $(date +%s) - 1))
    [ "$wait" -gt 0 ] && sleep "$wait"
    pebble_pause
    wait_for 6 cluster_holder_due && return 0
    pebble_resume
    sleep 2
  done
  return 1
}

cluster_kill_lock_holder() {
  local j
  cluster_catch_lock_holder || return 1
  for j in 1 2 3; do KILLED_BEFORE[$j]=$(member_events "$j" "obtained|renewed|reloaded" "$CAUGHT_NAME" | wc -l); done
  member_kill "$CAUGHT_MEMBER"
  KILLED_AT=$(date +%s.%N) KILLED_MEMBER=$CAUGHT_MEMBER KILLED_NAME=$CAUGHT_NAME
  pebble_resume
  # every name the killed member was renewing (queued, not done): what it
  # obtained and did not commit or record is obtained again
  KILLED_IN_FLIGHT=$(awk '/event=job_queued name=renew:/ { sub(/.*name=renew:/, ""); q[$1] = 1 }
    /event=job_done .*name=renew:/ { sub(/.*name=renew:/, ""); delete q[$1] }
    END { for (n in q) print n }' "${MEMBER_LOG[$KILLED_MEMBER]}" | sort | tr '\n' ' ')
}

cluster_handover_seconds() {
  local i end=$((SECONDS + 60))
  while [ $SECONDS -lt $end ]; do
    for i in 1 2 3; do
      [ "$i" = "$KILLED_MEMBER" ] && continue
      if [ "$(member_events "$i" "obtained|renewed|reloaded" "$KILLED_NAME" | wc -l)" -gt "${KILLED_BEFORE[$i]}" ]; then
        awk -v a="$KILLED_AT" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'
        return 0
      fi
    done
    sleep 0.05
  done
  return 1
}

# The scenario cluster_file.sh and cluster_etcd.sh share: a dozen names
# obtained, renewed in two rounds, a lock holder killed with SIGKILL in the
# second; checks and figures (FIGURE lines). etcd_requests counts etcd's side
# when CLUSTER_STORAGE=etcd.
cluster_scenario() {
  local i n
  for i in 1 2 3; do member_start "$i"; done
  check "member 1 stands by for http-01 on Pebble's httpPort" \
    wait_for 15 grep -q "event=acme_http01_listening.*port=$PEBBLE_HTTP_PORT" "${MEMBER_LOG[1]}"
  check "every one of the 12 names is obtained" wait_for 90 cluster_issued_at_least 1
  local req0 req1
  [ "$CLUSTER_STORAGE" = etcd ] && req0=$(etcd_requests)
  check "round 1: every name is renewed (40 s certificates)" wait_for 90 cluster_issued_at_least 2
  if [ "$CLUSTER_STORAGE" = etcd ]; then
    req1=$(etcd_requests)
    echo "FIGURE etcd_requests_per_renewal=$(awk -v a="$req0" -v b="$req1" 'BEGIN { printf "%.1f", (b - a) / 12 }') (round 1: $((req1 - req0)) KV/Lease requests for 12 renewals, three members, reloads and heartbeats included)"
  fi
  check "round 1: no name was issued twice" test "$(cluster_duplicates)" -eq 0

  check "a lock holder (member 2 or 3) is killed with SIGKILL while it renews" cluster_kill_lock_holder
  local handover
  handover=$(cluster_handover_seconds) || handover=
  echo "FIGURE lock_handover_seconds=${handover:-none} (SIGKILL of member $KILLED_MEMBER holding $KILLED_NAME until another member logged it done)"
  check "another member finishes $KILLED_NAME after the kill (${handover:-never} s)" test -n "$handover"
  check "round 2: every name is renewed" wait_for 90 cluster_issued_at_least 3
  # the killed member's in-flight orders are finished by the others (the
  # order and its CSR's key are in storage from before finalize): they count
  local dups in_flight
  dups=$(cluster_duplicates)
  in_flight=$(( dups - $(cluster_duplicates "$KILLED_IN_FLIGHT") ))
  echo "FIGURE duplicate_issuances=$dups (over $(cluster_issuances | wc -l) issuances; $in_flight of them of the killed member's in-flight renewals: ${KILLED_IN_FLIGHT:-none})"
  check "no name was issued twice in a round, the killed member's in-flight names included" test "$dups" -eq 0
  echo "FIGURE orders_resumed=$(cat "${MEMBER_LOG[@]}" | grep -c 'event=acme_order_resumed' || true) (ACME orders another member or attempt had opened, finished instead of ordering again)"
  check "Pebble really validated over HTTP" grep -q "Attempting to validate w/ HTTP" "$PEBBLE_LOG"
  check "member 1 answered other members' validations from storage" \
    grep -q "event=challenge_served challenge=http-01 distributed=true" "${MEMBER_LOG[1]}"

  # every surviving member ends with what storage holds (status --json of each)
  local survivors=() expected
  for i in 1 2 3; do [ "$i" = "$KILLED_MEMBER" ] || survivors+=("$i"); done
  expected=$(member_status_serials 1)
  check "status --json lists the 12 certificates" test "$(grep -c . <<<"$expected")" -eq 12
  for i in "${survivors[@]}"; do
    check "member $i's status --json shows the same serials" test "$(member_status_serials "$i")" = "$expected"
  done
  cluster_members_agree() {
    local i name serial
    while read -r name serial; do
      for i in "${survivors[@]}"; do [ "$(member_last_serial "$i" "$name")" = "$serial" ] || return 1; done
    done <<<"$expected"
  }
  check "every surviving member loaded the stored serial of every name (its log)" wait_for 30 cluster_members_agree
  for i in "${survivors[@]}"; do
    check "member $i stops on SIGTERM with status 0" member_stop "$i"
  done
  for i in "${survivors[@]}"; do
    check "no error in member $i's log" bash -c "! grep 'level=error' '${MEMBER_LOG[$i]}'"
  done
}

# cluster_stored_set_ok NAME: the certificate and key stored for NAME parse
# and belong together (etcd: behind storage/etcd.lua's one-line envelope)
cluster_stored_set_ok() {
  local dir=certificates/$PEBBLE_ISSUER_KEY/$1 crt=$WORK/stored-$1.crt key=$WORK/stored-$1.key
  if [ "$CLUSTER_STORAGE" = etcd ]; then
    etcd_get "/certmaint-it/data/$dir/$1.crt" | tail -n +2 >"$crt" || return 1
    etcd_get "/certmaint-it/data/$dir/$1.key" | tail -n +2 >"$key" || return 1
  else
    cp "$SHARED_DATA/$dir/$1.crt" "$crt" && cp "$SHARED_DATA/$dir/$1.key" "$key" || return 1
  fi
  local a b
  a=$(openssl x509 -in "$crt" -noout -pubkey 2>/dev/null) && [ -n "$a" ] || return 1
  b=$(openssl pkey -in "$key" -pubout 2>/dev/null) && [ -n "$b" ] || return 1
  [ "$a" = "$b" ]
}
cluster_storage_intact() {
  local n
  for n in $CLUSTER_NAMES; do cluster_stored_set_ok "$n" || { echo "stored set of $n is damaged" >&2; return 1; }; done
}
