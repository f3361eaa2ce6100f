#!/usr/bin/env bash
# ocsp_pass.sh - the OCSP pass over N certificates against a local `openssl ocsp`.
#
#   [BIN=build/certmaint] [N=10000] [CONCURRENCY=16] [MULTI=2] [RUNS=1] [WORK=build-bench]
#     bash bench/ocsp_pass.sh
#
# Generates (each run: the responder's port is in the certificates) a store in
# certmagic's file layout with N certificates whose OCSP URL is
# http://127.0.0.1:PORT (gen_store.c with GEN_STORE_OCSP_URL; leaf + CA
# chain, one shared P-256 leaf key, a P-256 CA), lists them all good in an
# index.txt and starts `openssl ocsp -index ... -port PORT -rsigner CA -rkey
# CA.key -CA CA -nmin 60 -multi MULTI` (MULTI responder processes; kept on
# 127.0.0.1 by tests/integration/stubs/bind_loopback.c). A policy names
# host1..hostN (internal issuer whose storage key is the store's folder) with
# ocsp.concurrency = CONCURRENCY. Then, RUNS times each, keeping the fastest:
#   off    `certmaint once` with ocsp.enabled = false: load, renew and clean passes
#   fetch  `certmaint once` on a store without staples: every staple fetched,
#          verified, stored (the staples are deleted before each such run)
#   stored `certmaint once` again: every staple taken from storage
# and prints per run kind the wall time, certmaint's CPU time (user + sys)
# and peak RSS (GNU time), the OCSP
# tick's counts, and for fetch/stored the OCSP pass's share: wall - wall(off),
# also per certificate; plus the most connections to the responder seen at
# once (ss, sampled every 50 ms: in flight or queued at the responder) and the
# staples stored. Registered in no ctest: it prints figures. Needs cc, the
# OpenSSL headers, GNU time, ss.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$SRC/build/certmaint}
N=${N:-10000}
CONCURRENCY=${CONCURRENCY:-16}
MULTI=${MULTI:-2}
RUNS=${RUNS:-1}
WORK=${WORK:-$SRC/build-bench}
TIME=${TIME_BIN:-/usr/bin/time}
ISSUER=ocsp-bench

[[ -x $BIN ]] || { echo "ocsp_pass.sh: no certmaint binary at $BIN (set BIN=...)" >&2; exit 2; }
[[ -x $TIME ]] || { echo "ocsp_pass.sh: GNU time not found at $TIME (set TIME_BIN=...)" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

GEN=$WORK/gen_store
if [[ ! -x $GEN || $SRC/bench/gen_store.c -nt $GEN ]]; then
  # shellcheck disable=SC2046
  cc -O2 -std=c11 -D_GNU_SOURCE -Wall -o "$GEN" "$SRC/bench/gen_store.c" \
    $(pkg-config --cflags --libs openssl 2>/dev/null || echo -lssl -lcrypto)
fi
SHIM=$WORK/bind_loopback.so
if [[ ! -f $SHIM || $SRC/tests/integration/stubs/bind_loopback.c -nt $SHIM ]]; then
  cc -shared -fPIC -O2 -o "$SHIM" "$SRC/tests/integration/stubs/bind_loopback.c" -ldl
fi

RUN=$(mktemp -d "$WORK/ocsp-pass.XXXXXX")
RESPONDER_PID= SAMPLER_PID=
cleanup() {
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  if [[ -n $RESPONDER_PID ]]; then
    # with -multi the parent outlives a SIGTERM: its children first, then it
    local kids
    kids=$(ps -o pid= --ppid "$RESPONDER_PID" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [[ -n $kids ]] && kill -TERM $kids 2>/dev/null || true
    kill -KILL "$RESPONDER_PID" 2>/dev/null || true
    wait "$RESPONDER_PID" 2>/dev/null || true
  fi
  [[ ${KEEP_WORK:-0} = 1 ]] && echo "# kept $RUN" >&2 || rm -rf "$RUN"
}
trap cleanup EXIT

# a free port below the ephemeral range
listening=$(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
PORT=
for _ in $(seq 1 100); do
  p=$((20000 + RANDOM % 12000))
  grep -qx "$p" <<<"$listening" || { PORT=$p; break; }
done
[[ -n $PORT ]] || { echo "ocsp_pass.sh: no free port found" >&2; exit 1; }

# --- the store and the index -------------------------------------------------
STORE=$RUN/store
"$GEN" init "$RUN"
echo "# generating $N certificates (OCSP URL http://127.0.0.1:$PORT)" >&2
t0=$(date +%s)
mid=$(( (N + 1) / 2 ))
GEN_STORE_OCSP_URL=http://127.0.0.1:$PORT "$GEN" certs "$RUN" "$STORE" "$ISSUER" 1 "$mid" &
g1=$!
if (( mid < N )); then GEN_STORE_OCSP_URL=http://127.0.0.1:$PORT "$GEN" certs "$RUN" "$STORE" "$ISSUER" $((mid + 1)) "$N"; fi
wait "$g1"
echo "# generated in $(( $(date +%s) - t0 )) s" >&2
expiry=$(date -u -d "$(openssl x509 -in "$STORE/certificates/$ISSUER/host1.bench.test/host1.bench.test.crt" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
# index.txt: V, expiry, (no revocation), SERIAL (upper-case hex), unknown, subject
find "$STORE/certificates/$ISSUER" -name '*.json' -print0 | xargs -0 cat |
  sed -n 's/.*"sans": \["\([^"]*\)"\].*/\1/p; s/.*"serial": "\([0-9a-f]*\)".*/\1/p' |
  awk -v e="$expiry" 'NR % 2 == 1 { name = $0; next } { printf "V\t%s\t\t%s\tunknown\t/CN=%s\n", e, toupper($0), name }' \
  > "$RUN/index.txt"
echo "unique_subject = no" > "$RUN/index.txt.attr"
(( $(wc -l < "$RUN/index.txt") == N )) || { echo "ocsp_pass.sh: the index has $(wc -l < "$RUN/index.txt") lines, expected $N" >&2; exit 1; }

LD_PRELOAD=$SHIM openssl ocsp -index "$RUN/index.txt" -port "$PORT" -rsigner "$RUN/ca.crt" -rkey "$RUN/ca.key" \
  -CA "$RUN/ca.crt" -nmin 60 -multi "$MULTI" -ignore_err > "$RUN/responder.log" 2>&1 &
RESPONDER_PID=$!
for _ in $(seq 1 50); do [[ -n $(ss -Hltn "sport = :$PORT") ]] && break; sleep 0.1; done
[[ -n $(ss -Hltn "sport = :$PORT") ]] || { echo "ocsp_pass.sh: openssl ocsp did not listen" >&2; cat "$RUN/responder.log" >&2; exit 1; }
leaf1=$RUN/leaf1.pem
awk 'f<1{print} /END CERTIFICATE/{f++}' "$STORE/certificates/$ISSUER/host1.bench.test/host1.bench.test.crt" > "$leaf1"
openssl ocsp -issuer "$RUN/ca.crt" -cert "$leaf1" -url "http://127.0.0.1:$PORT" -CAfile "$RUN/ca.crt" -no_nonce 2>&1 |
  grep -q ': good' || { echo "ocsp_pass.sh: the responder does not answer good for host1" >&2; exit 1; }

policy_for() { # ENABLED -> policy path
  local p=$RUN/policy-$1.lua
  cat > "$p" <<EOF
-- generated by bench/ocsp_pass.sh: $N certificates in certmagic's layout, OCSP at 127.0.0.1:$PORT
local certmaint = require "certmaint"
local names = {}
for i = 1, $N do names[i] = "host" .. i .. ".bench.test" end
return certmaint.policy {
  storage = certmaint.storage.file { root = "$STORE" },
  issuer = certmaint.issuer.internal { name = "$ISSUER" },
  certificates = names,
  ocsp = { enabled = $1, concurrency = $CONCURRENCY, timeout = "30s" },
}
EOF
  echo "$p"
}

# the most client connections to the responder at once, sampled until killed
sample_connections() {
  local peak=0 c
  while :; do
    c=$(ss -Htn state established "dport = :$PORT" 2>/dev/null | wc -l)
    (( c > peak )) && { peak=$c; echo "$peak" > "$RUN/peak"; }
    sleep 0.05
  done
}

run_once() { # KIND POLICY -> sets wall_ns rss_kib tick
  local kind=$1 pol=$2 t0 t1
  echo 0 > "$RUN/peak"
  sample_connections & SAMPLER_PID=$!
  t0=$(date +%s%N)
  "$TIME" -f '%M %U %S' -o "$RUN/time-$kind" "$BIN" once "$pol" > "$RUN/out-$kind" 2> "$RUN/log-$kind" || {
    echo "ocsp_pass.sh: certmaint once ($kind) failed:" >&2; grep -v 'level=debug' "$RUN/log-$kind" | tail -5 >&2; exit 1; }
  t1=$(date +%s%N)
  kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=
  wall_ns=$(( t1 - t0 ))
  read -r rss_kib user_s sys_s < <(tail -1 "$RUN/time-$kind")
  cpu_s=$(awk -v u="$user_s" -v s="$sys_s" 'BEGIN { printf "%.2f", u + s }')
  peak=$(cat "$RUN/peak")
  tick=$(grep 'event=tick' "$RUN/log-$kind" | grep 'kind=ocsp' | tail -1 |
    grep -o ' \(due\|refreshed\|from_storage\|failed\|kept\|revoked\)=[0-9]*' | tr -d '\n' || true)
}

echo "# BIN=$BIN ($(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')) N=$N concurrency=$CONCURRENCY responder processes=$MULTI runs=$RUNS (fastest kept) $(nproc) CPUs"
off_wall=
for kind in off fetch stored; do
  best_wall= best_rss= best_tick= best_peak= best_cpu=
  for ((r = 0; r < RUNS; r++)); do
    if [[ $kind == off ]]; then pol=$(policy_for false); else pol=$(policy_for true); fi
    [[ $kind == fetch ]] && rm -rf "$STORE/ocsp"
    run_once "$kind" "$pol"
    if [[ -z $best_wall ]] || (( wall_ns < best_wall )); then
      best_wall=$wall_ns best_rss=$rss_kib best_tick=$tick best_peak=$peak best_cpu=$cpu_s
    fi
  done
  [[ $kind == off ]] && off_wall=$best_wall
  staples=$( (find "$STORE/ocsp" -type f 2>/dev/null || true) | wc -l)
  awk -v k="$kind" -v w="$best_wall" -v rss="$best_rss" -v off="$off_wall" -v n="$N" -v t="$best_tick" \
      -v peak="$best_peak" -v st="$staples" -v cpu="$best_cpu" 'BEGIN {
    line = sprintf("%-6s wall_s=%.2f certmaint_cpu_s=%.2f peak_rss_mib=%.1f", k, w / 1e9, cpu, rss / 1024)
    if (k != "off") line = line sprintf(" ocsp_pass_s=%.2f us_per_cert=%.0f peak_connections=%d staples_stored=%d%s",
      (w - off) / 1e9, (w - off) / 1e3 / n, peak, st, t)
    print line
  }'
done
