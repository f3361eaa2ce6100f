#!/usr/bin/env bash
# obtain_once.sh - the obtain path end to end: `certmaint once` obtaining N
# certificates from the internal issuer (certmaint.issuer.internal) into a
# fresh file storage, wall time against CPU time.
#
#   [BIN=build/certmaint] [N=1000] [RUNS=1] [WORK=/var/tmp/certmaint-bench-once] bash bench/obtain_once.sh
#
# Each run starts from an empty storage root under WORK (a disk that
# fsyncs), writes a policy naming hostI.bench.test for I = 1..N, runs
# `BIN once POLICY` under GNU time and prints wall, user and system seconds,
# (user + sys) / wall, and how many certificate files were stored. A wall far
# above the CPU time is time the process spent waiting (the fsyncs). Prints
# figures; registered in no ctest.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$SRC/build/certmaint}
N=${N:-1000}
RUNS=${RUNS:-1}
WORK=${WORK:-/var/tmp/certmaint-bench-once}
TIME=${TIME_BIN:-/usr/bin/time}
[[ -x $BIN ]] || { echo "obtain_once.sh: no certmaint binary at $BIN" >&2; exit 2; }
[[ -x $TIME ]] || { echo "obtain_once.sh: GNU time not found at $TIME" >&2; exit 2; }
mkdir -p "$WORK"
POLICY=$WORK/policy-$N.lua
cat > "$POLICY" <<POL
local certmaint = require "certmaint"
local names = {}
for i = 1, $N do names[i] = "host" .. i .. ".bench.test" end
return certmaint.policy {
  storage = certmaint.storage.file { root = "$WORK/store" },
  issuer = certmaint.issuer.internal { lifetime = "30d" },
  certificates = names,
}
POL
for ((r = 1; r <= RUNS; r++)); do
  rm -rf "$WORK/store" && mkdir -m 0700 "$WORK/store"
  "$TIME" -v "$BIN" once "$POLICY" > "$WORK/out.log" 2> "$WORK/err.log" || {
    echo "obtain_once.sh: certmaint once failed (see $WORK/err.log)" >&2; tail -5 "$WORK/err.log" >&2; exit 1; }
  wall=$(grep 'Elapsed (wall clock)' "$WORK/err.log" | awk '{print $NF}' | awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
  user=$(grep 'User time' "$WORK/err.log" | awk '{print $NF}')
  sys=$(grep 'System time' "$WORK/err.log" | awk '{print $NF}')
  crts=$(find "$WORK/store/certificates" -name '*.crt' | wc -l)
  awk -v n="$N" -v w="$wall" -v u="$user" -v s="$sys" -v c="$crts" 'BEGIN {
    printf "n=%d stored_crt=%d wall_s=%.2f user_s=%.2f sys_s=%.2f cpu_over_wall=%.2f obtains_per_s=%.0f\n",
      n, c, w, u, s, (u + s) / w, n / w }'
done
