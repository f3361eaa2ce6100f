#!/usr/bin/env bash
# bench/chaos.sh - an hour of `certmaint run` under chaos, on 127.0.0.1 only.
#
#   [DURATION=3600] [NAMES=4] [CHAOS_MIN=15] [CHAOS_MAX=45] [DOWN_MAX=5]
#   [REVOKE_MIN=90] [REVOKE_MAX=240] [GRACE=15] [RESULTS=DIR]
#   [CERTMAINT_BIN=build/certmaint] nice -n 10 bash bench/chaos.sh
#
# Two `certmaint run` members (bench/chaos_member.lua) share one etcd as their
# storage, against a real Pebble issuing 60 s certificates (real http-01
# validation through pebble-challtestsrv, 5% bad nonces, authorization reuse)
# with `openssl ocsp` answering for Pebble's intermediate (the project's
# tests/integration helpers start all of it). Every CHAOS_MIN..CHAOS_MAX
# seconds one component, chosen at random (member 1, member 2, etcd, the OCSP
# responder, Pebble), gets SIGKILL or SIGTERM (random) and is started again
# 1..DOWN_MAX seconds later (Pebble comes back with new roots and no
# accounts; the responder then signs as the new intermediate). Every
# REVOKE_MIN..REVOKE_MAX seconds the certificate one member serves for a
# random name is marked revoked in the responder's index.
#
# Evidence, sampled while it runs:
#   every second: each live member's deployed fullchain.pem of each name
#     (serial, past notAfter?); every 5 s the certificate stored in etcd
#   every minute: each member's VmRSS
#   Pebble's log (every issuance, its serial; the OCSP sync fetches each
#     issued certificate, so serials map to names), the members' logs
# Figures (one line each at the end; RESULTS=DIR keeps them and the details):
#   CHAOS expired_while_managed=N  samples where a member that had been up for
#       STARTUP_GRACE s deployed a certificate past its notAfter (must be 0);
#       expired_stored: the same for etcd's copy while etcd answered
#   duplicate_orders=N  new ACME orders a member created (its
#       acme_order_created event) for a name less than DUP_GAP s after Pebble
#       issued that name a certificate this script had not revoked (must be 0);
#       duplicate_issuances: Pebble's issuances of a name less than DUP_GAP s
#       after the previous one, that one not revoked (must be 0)
#   revoked_served=N  revoked serials a live member still deployed more than
#       DEADLINE s after the responder first answered "revoked" (must be 0);
#       DEADLINE = half the staple span (a staple is refreshed half-way
#       through, 30 s with -nmin 1) + the OCSP pass interval + GRACE
#   RSS member=I pid=... min max end (KiB, minute samples of every incarnation)
#   KILLS component=... kill=N term=N; renewals, issuances, errors
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
export CERTMAINT_SOURCE_DIR=$SRC
export CERTMAINT_BIN=${CERTMAINT_BIN:-$SRC/build/certmaint}
[ -x "$CERTMAINT_BIN" ] || { echo "chaos.sh: no certmaint binary at $CERTMAINT_BIN (build first)" >&2; exit 2; }
DURATION=${DURATION:-3600}
NAME_COUNT=${NAMES:-4}
CHAOS_MIN=${CHAOS_MIN:-15} CHAOS_MAX=${CHAOS_MAX:-45}
DOWN_MAX=${DOWN_MAX:-5}
REVOKE_MIN=${REVOKE_MIN:-90} REVOKE_MAX=${REVOKE_MAX:-240}
GRACE=${GRACE:-15}
STARTUP_GRACE=${STARTUP_GRACE:-10}
VALIDITY=60
export CHAOS_OCSP_CHECK=2s CHAOS_LOCK_TTL=${CHAOS_LOCK_TTL:-5s} CHAOS_RENEW_RATIO=0.5
# renewal at 30 s of a 60 s life: a legitimate next issuance is >= 30 s later
DUP_GAP=${DUP_GAP:-20}
DEADLINE=$(( VALIDITY / 2 + 2 + GRACE ))

source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/pebble.bash"
source "$SRC/tests/integration/ocsp.bash"
source "$SRC/tests/integration/etcd.bash"
set +e +o pipefail  # chaos: a failed restart is logged and retried, never the end of the run
set -u

BIN=$CERTMAINT_BIN
POLICY=$SRC/bench/chaos_member.lua
MEMBER_PID=() MEMBER_LOG=()
SAMPLER_PID= RSS_PID=
KILLS=$WORK/kills.tsv REVOKES=$WORK/revocations.tsv EVENTS=$WORK/chaos.log
: > "$KILLS"; : > "$REVOKES"; : > "$EVENTS"
note() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$EVENTS"; }

chaos_cleanup() {
  local p
  for p in "$SAMPLER_PID" "$RSS_PID"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done
  for p in "${MEMBER_PID[@]}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  true
}
trap 'chaos_cleanup; ocsp_cleanup; etcd_stop; pebble_cleanup; cleanup' EXIT
trap 'exit 130' INT TERM

names=""
for i in $(seq 1 "$NAME_COUNT"); do names+="c$i.chaos.test "; done
export CHAOS_NAMES=${names% }
export CHAOS_DEPLOY_DIR=$WORK/deploy
mkdir -p "$CHAOS_DEPLOY_DIR/1" "$CHAOS_DEPLOY_DIR/2"

# --- the servers --------------------------------------------------------------
etcd_env
ocsp_pebble_start --validity "$VALIDITY" --nosleep || { echo "chaos.sh: Pebble/OCSP did not start" >&2; exit 1; }
etcd_start || { echo "chaos.sh: etcd did not start" >&2; exit 1; }
export CHAOS_ETCD_URL=$ETCD_URL CHAOS_SILENT_PORT=$CRL_PORT  # no CRL server runs here

member_start() {
  MEMBER_LOG[$1]=$WORK/member$1.log
  MEMBER=$1 "$BIN" run "$POLICY" 2>>"${MEMBER_LOG[$1]}" &
  MEMBER_PID[$1]=$!
  echo "${MEMBER_PID[$1]}" > "$WORK/member$1.pid"
  date +%s > "$WORK/member$1.started"
}
member_down() { # I SIGNAL
  local pid=${MEMBER_PID[$1]} i
  { kill "-$2" "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid"; wait "$pid"; } 2>/dev/null
  : > "$WORK/member$1.pid"
}

# Pebble again (new roots, intermediate, no accounts), the responder signing as it
pebble_again() {
  local try
  for try in 1 2 3; do
    pebble_start &&
      curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/intermediates/0" > "$OCSP_DIR/pebble-int.pem" &&
      (umask 077; curl -sf --cacert "$PEBBLE_CA_BUNDLE" "$PEBBLE_MGMT/intermediate-keys/0" > "$OCSP_DIR/pebble-int.key") &&
      pebble_root > "$OCSP_DIR/pebble-root.pem" && break
    note "pebble restart attempt $try failed"; pebble_stop_pid "$PEBBLE_PID" KILL; PEBBLE_PID=; sleep 2
  done
  ocsp_use_ca "$OCSP_DIR/pebble-int.pem" "$OCSP_DIR/pebble-int.key" "$OCSP_DIR/pebble-root.pem"
  ocsp_stop; ocsp_start || note "responder did not start"
}

# --- the samplers (background; they read pids from files) --------------------
now_s() { date +%s; }
sampler() {
  local t i n pid started f out serial
  while :; do
    t=$(now_s)
    for i in 1 2; do
      pid=$(cat "$WORK/member$i.pid" 2>/dev/null)
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
      started=$(cat "$WORK/member$i.started" 2>/dev/null || echo "$t")
      [ $((t - started)) -ge "$STARTUP_GRACE" ] || continue
      for n in $CHAOS_NAMES; do
        f=$CHAOS_DEPLOY_DIR/$i/$n/fullchain.pem
        [ -s "$f" ] || { echo "$t $i $n missing" >> "$WORK/missing.log"; continue; }
        out=$(openssl x509 -in "$f" -noout -serial -checkend 0 2>&1)
        serial=$(sed -n 's/^serial=//p' <<<"$out" | tr A-F a-f | sed 's/^0*//')
        grep -q "will expire" <<<"$out" && echo "$t $i $n $serial" >> "$WORK/expired.log"
        echo "$t $i $n $serial" >> "$WORK/served.log"
      done
    done
    if [ $((t % 5)) = 0 ] && etcd_healthy; then
      for n in $CHAOS_NAMES; do
        etcd_get "/certmaint-chaos/data/certificates/$PEBBLE_ISSUER_KEY/$n/$n.crt" 2>/dev/null | tail -n +2 > "$WORK/stored.pem" || continue
        [ -s "$WORK/stored.pem" ] || continue
        openssl x509 -in "$WORK/stored.pem" -noout -checkend 0 >/dev/null 2>&1 ||
          echo "$t $n $(openssl x509 -in "$WORK/stored.pem" -noout -serial 2>/dev/null)" >> "$WORK/expired-stored.log"
      done
    fi
    sleep 1
  done
}
rss_sampler() {
  local i pid kib started
  while :; do
    for i in 1 2; do
      pid=$(cat "$WORK/member$i.pid" 2>/dev/null)
      [ -n "$pid" ] || continue
      # a sample of a member just forked (not yet exec'd) would be the shell's
      started=$(cat "$WORK/member$i.started" 2>/dev/null || echo 0)
      [ $(( $(now_s) - started )) -ge "$STARTUP_GRACE" ] || continue
      kib=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
      [ -n "$kib" ] && echo "$(now_s) $i $pid $kib" >> "$WORK/rss.tsv"
    done
    sleep 60
  done
}

# --- chaos --------------------------------------------------------------------
COMPONENTS=(member1 member2 etcd ocsp pebble)
rand_between() { echo $(( $1 + RANDOM % ($2 - $1 + 1) )); }
chaos_once() {
  local c=${COMPONENTS[RANDOM % ${#COMPONENTS[@]}]} sig down
  sig=$([ $((RANDOM % 2)) = 0 ] && echo KILL || echo TERM)
  down=$(rand_between 1 "$DOWN_MAX")
  note "chaos: $c SIG$sig, down ${down}s"
  echo "$(now_s) $c $sig" >> "$KILLS"
  case $c in
    member1|member2)
      local i=${c#member}
      member_down "$i" "$sig"; sleep "$down"; member_start "$i" ;;
    etcd)
      pebble_stop_pid "$ETCD_PID" "$sig"; ETCD_PID=; sleep "$down"
      etcd_start || { note "etcd did not come back, again"; sleep 2; etcd_start || note "etcd still down"; } ;;
    ocsp)
      ocsp_stop_pid "$OCSP_PID" "$sig"; OCSP_PID=; sleep "$down"; ocsp_start || note "responder did not start" ;;
    pebble)
      pebble_stop_pid "$PEBBLE_PID" "$sig"; PEBBLE_PID=; sleep "$down"; pebble_again ;;
  esac
}

# Mark the certificate member I serves for a random name revoked in the
# responder's index; the clock starts when the responder answers "revoked"
# (a certificate of a CA from before a Pebble restart gets no answer from the
# new signer: skipped).
revoke_once() {
  local n i f serial try word
  n=$(tr ' ' '\n' <<<"$CHAOS_NAMES" | shuf -n 1)
  for i in 1 2; do
    f=$CHAOS_DEPLOY_DIR/$i/$n/fullchain.pem
    [ -s "$f" ] && break
  done
  [ -s "$f" ] || { note "revoke: nothing deployed for $n"; return 0; }
  cp "$f" "$WORK/revoke.pem"
  serial=$(cert_serial "$WORK/revoke.pem" | sed 's/^0*//')
  grep -q " $serial " "$REVOKES" && return 0
  ocsp_revoke "$serial" keyCompromise
  for try in $(seq 1 20); do
    word=$(ocsp_query "$WORK/revoke.pem")
    [ "$word" = revoked ] && break
    sleep 0.5
  done
  if [ "$word" = revoked ]; then
    echo "$(now_s) $n $serial " >> "$REVOKES"
    note "revoke: $n serial $serial, the responder says revoked"
  else
    note "revoke: $n serial $serial not confirmed by the responder ($word): not counted"
  fi
}

# --- the run ------------------------------------------------------------------
note "chaos run: ${DURATION}s, names: $CHAOS_NAMES, Pebble $PEBBLE_DIR_URL, etcd $ETCD_URL, OCSP $OCSP_URL, work $WORK"
member_start 1; member_start 2
sampler >/dev/null 2>&1 & SAMPLER_PID=$!
rss_sampler >/dev/null 2>&1 & RSS_PID=$!
start=$(now_s); end=$((start + DURATION))
# the first round obtains in peace
next_chaos=$((start + 30 + $(rand_between "$CHAOS_MIN" "$CHAOS_MAX")))
next_revoke=$((start + 60 + $(rand_between 0 30)))
while [ "$(now_s)" -lt "$end" ]; do
  t=$(now_s)
  if [ "$t" -ge "$next_chaos" ]; then chaos_once; next_chaos=$(( $(now_s) + $(rand_between "$CHAOS_MIN" "$CHAOS_MAX") )); fi
  if [ "$t" -ge "$next_revoke" ] && [ "$t" -lt $((end - DEADLINE - 5)) ]; then
    revoke_once; next_revoke=$(( $(now_s) + $(rand_between "$REVOKE_MIN" "$REVOKE_MAX") ))
  fi
  for i in 1 2; do  # a member that died by itself is a finding: logged, restarted
    if [ -s "$WORK/member$i.pid" ] && ! kill -0 "${MEMBER_PID[$i]}" 2>/dev/null; then
      wait "${MEMBER_PID[$i]}"; note "member $i exited by itself (status $?)"
      echo "$(now_s) member$i self" >> "$KILLS"; member_start "$i"
    fi
  done
  sleep 1
done
# everything up again for the last sample, then the members stop
note "chaos over; the members stop (SIGTERM)"
kill -TERM "$SAMPLER_PID" "$RSS_PID" 2>/dev/null; wait "$SAMPLER_PID" "$RSS_PID" 2>/dev/null
SAMPLER_PID= RSS_PID=
for i in 1 2; do
  kib=$(awk '/^VmRSS/ {print $2}' "/proc/${MEMBER_PID[$i]}/status" 2>/dev/null)
  [ -n "$kib" ] && echo "$(now_s) $i ${MEMBER_PID[$i]} $kib" >> "$WORK/rss.tsv"
done
stop_status=()
for i in 1 2; do
  kill -TERM "${MEMBER_PID[$i]}"; wait "${MEMBER_PID[$i]}"; stop_status[$i]=$?; : > "$WORK/member$i.pid"
done

# --- figures ------------------------------------------------------------------
touch "$WORK/expired.log" "$WORK/expired-stored.log" "$WORK/served.log" "$WORK/rss.tsv" "$WORK/missing.log"
norm() { tr A-F a-f | sed 's/^0*//'; }
# serial -> first name: Pebble's certificates as the OCSP sync fetched them,
# then the members' logs (a serial issued just before Pebble went down)
: > "$WORK/serial-names"
for pem in "$OCSP_DIR"/pebble-*.pem; do
  [ -s "$pem" ] || continue
  s=${pem##*/pebble-}; s=${s%.pem}
  n=$(openssl x509 -in "$pem" -noout -ext subjectAltName 2>/dev/null | grep -o 'DNS:[^, ]*' | head -n 1 | cut -d: -f2)
  [ -n "$n" ] && echo "$(norm <<<"$s") $n" >> "$WORK/serial-names"
done
cat "${MEMBER_LOG[@]}" | grep -E 'event=(obtained|renewed) ' |
  sed -n 's/.* name=\([^ ]*\) .*serial=\([0-9A-Fa-f]*\).*/\2 \1/p' | while read -r s n; do echo "$(norm <<<"$s") $n"; done >> "$WORK/serial-names"
# issuances: epoch serial, from Pebble's log
grep -o '^Pebble [0-9/]* [0-9:]* Issued certificate serial [0-9a-f]*' "$PEBBLE_LOG" |
  while read -r _ day time _ _ _ s; do echo "$(date -d "${day//\//-} $time" +%s) $(norm <<<"$s")"; done > "$WORK/issuances"
issuances=$(wc -l < "$WORK/issuances")
awk 'FNR == NR { if (!($1 in name)) name[$1] = $2; next }
     FILENAME ~ /revocations/ { rev[$3] = $1; next }
     { print $1, $2, ($2 in name) ? name[$2] : "?" }' "$WORK/serial-names" "$REVOKES" "$WORK/issuances" |
  sort -k3,3 -k1,1n > "$WORK/issuances-named"
# a duplicate: the previous issuance of the name is less than DUP_GAP s old and
# was not revoked by this script before this one
awk -v gap="$DUP_GAP" 'FNR == NR { rev[$3] = $1; next }
     $3 != "?" && $3 == prev && $1 - last < gap && !((pserial in rev) && rev[pserial] <= $1) {
       print "duplicate:", $3, "serial", $2, "at", $1, "previous", pserial, "at", last }
     { prev = $3; last = $1; pserial = $2 }' "$REVOKES" "$WORK/issuances-named" > "$WORK/duplicates.log"
duplicate_issuances=$(wc -l < "$WORK/duplicates.log")
# orders: every new ACME order a member created (its acme_order_created event:
# name, time to the second); a duplicate order is one created less than
# DUP_GAP s after Pebble issued that name a certificate (in an earlier second,
# so surely before: Pebble logs whole seconds) not revoked by this script by then
cat "${MEMBER_LOG[@]}" | grep 'event=acme_order_created' |
  sed -n 's/^ts=\([^ ]*\) .* name=\([^ ]*\).*/\1 \2/p' |
  while read -r ts n; do echo "$(date -d "$ts" +%s) $n"; done | sort -n > "$WORK/orders"
awk -v gap="$DUP_GAP" 'FILENAME ~ /revocations/ { rev[$3] = $1; next }
     FILENAME ~ /issuances-named/ { n++; it[n] = $1; is[n] = $2; iname[n] = $3; next }
     { at = $1; name = $2; best = -1
       for (i = 1; i <= n; i++) if (iname[i] == name && it[i] < at && it[i] > best) { best = it[i]; bs = is[i] }
       if (best >= 0 && at - best < gap && !((bs in rev) && rev[bs] <= at))
         printf "duplicate order: %s at %d, %d s after serial %s was issued\n", name, at, at - best, bs }' \
  "$REVOKES" "$WORK/issuances-named" "$WORK/orders" > "$WORK/duplicate-orders.log"
duplicate_orders=$(wc -l < "$WORK/duplicate-orders.log")
# of which within 90 s after a Pebble restart (Pebble forgets every account
# and order: a member's cached account URL is stale until the CA says so)
duplicate_orders_after_ca_restart=$(awk '$2 == "pebble" { k[++n] = $1; next }
     { t = $5 + 0; for (i = 1; i <= n; i++) if (t >= k[i] && t - k[i] <= 90) { c++; break } } END { print c + 0 }' \
  "$KILLS" "$WORK/duplicate-orders.log")
orders=$(wc -l < "$WORK/orders")
unnamed=$(awk '$3 == "?"' "$WORK/issuances-named" | wc -l)

expired_while_managed=$(wc -l < "$WORK/expired.log")
expired_stored=$(wc -l < "$WORK/expired-stored.log")
# revoked served: a live member deploying a revoked serial DEADLINE s after confirmation
awk -v dl="$DEADLINE" 'FNR == NR { rev[$3] = $1; next }
     ($4 in rev) && $1 > rev[$4] + dl { print; bad[$4] = 1 }
     END { }' "$REVOKES" "$WORK/served.log" > "$WORK/revoked-served.log"
revoked_served=$(awk '{ print $4 }' "$WORK/revoked-served.log" | sort -u | wc -l)
revocations=$(wc -l < "$REVOKES")
# detected: a member logged event=revoked for the name while that serial was current
detected=0
while read -r at n s; do
  grep -h "event=revoked " "${MEMBER_LOG[@]}" | grep -Eq "name=$n .*serial=0*$s( |$)" && detected=$((detected + 1))
done < "$REVOKES"
# how long each revoked serial stayed deployed after confirmation (max over members)
revoked_max_served=$(awk 'FNR == NR { rev[$3] = $1; next } ($4 in rev) { d = $1 - rev[$4]; if (d > m) m = d } END { print m + 0 }' "$REVOKES" "$WORK/served.log")

count_logged() { cat "${MEMBER_LOG[@]}" | grep -c "$1"; }
renewed=$(count_logged 'event=renewed ')
obtained=$(count_logged 'event=obtained ')
reloaded=$(count_logged 'event=reloaded ')
errors=$(count_logged 'level=error')
cat "${MEMBER_LOG[@]}" | grep 'level=error' | grep -o 'event=[a-z_0-9]*' | sort | uniq -c | sort -rn > "$WORK/errors-by-event"
kills_of() { awk -v c="$1" -v s="$2" '$2 == c && $3 == s { n++ } END { print n + 0 }' "$KILLS"; }

echo
echo "CHAOS duration_s=$(( $(now_s) - start )) names=$NAME_COUNT expired_while_managed=$expired_while_managed expired_stored=$expired_stored duplicate_orders=$duplicate_orders duplicate_issuances=$duplicate_issuances revoked_served=$revoked_served"
echo "CHAOS duplicate_orders_after_ca_restart=$duplicate_orders_after_ca_restart"
echo "CHAOS revocations=$revocations revocations_seen_by_ocsp=$detected revoked_longest_served_s=$revoked_max_served deadline_s=$DEADLINE"
echo "CHAOS orders=$orders issuances=$issuances unnamed_issuances=$unnamed obtained=$obtained renewed=$renewed reloaded=$reloaded errors=$errors missing_deploy_samples=$(wc -l < "$WORK/missing.log") served_samples=$(wc -l < "$WORK/served.log")"
for c in "${COMPONENTS[@]}"; do
  echo "KILLS component=$c kill=$(kills_of "$c" KILL) term=$(kills_of "$c" TERM) self=$(kills_of "$c" self)"
done
for i in 1 2; do
  awk -v m="$i" -v last="${MEMBER_PID[$i]}" -v st="${stop_status[$i]}" '$2 == m {
      if (min == "" || $4 < min) min = $4; if ($4 > max) max = $4; end = $4; n++; pids[$3] = 1 }
    END { k = 0; for (p in pids) k++
      printf "RSS member=%s pid=%s min=%s max=%s end=%s kib samples=%d incarnations=%d sigterm_exit=%s\n", m, last, min, max, end, n, k, st }' "$WORK/rss.tsv"
done
echo "errors by event:"; head -n 15 "$WORK/errors-by-event"
[ -s "$WORK/duplicates.log" ] && { echo "duplicate issuances:"; cat "$WORK/duplicates.log"; }
[ -s "$WORK/duplicate-orders.log" ] && { echo "duplicate orders:"; cat "$WORK/duplicate-orders.log"; }
[ -s "$WORK/expired.log" ] && { echo "expired samples (first 10):"; head -n 10 "$WORK/expired.log"; }
[ -s "$WORK/revoked-served.log" ] && { echo "revoked served samples (first 10):"; head -n 10 "$WORK/revoked-served.log"; }
if [ -n "${RESULTS:-}" ]; then
  mkdir -p "$RESULTS"
  cp "$EVENTS" "$KILLS" "$REVOKES" "$WORK"/*.log "$WORK/rss.tsv" "$WORK/issuances-named" "$WORK/errors-by-event" \
    "$WORK/orders" "$PEBBLE_LOG" "$ETCD_LOG" "$RESULTS/" 2>/dev/null
  echo "details kept in $RESULTS"
fi
