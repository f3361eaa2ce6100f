#!/usr/bin/env bash
# scripts/fuzz.sh [--seconds S] [--jobs N] [HARNESS...]: fuzz the harnesses of
# tests/fuzz/ (all, or those named: x509_chain lua_acme ...) with libFuzzer
# for S seconds each (default 60; a longer campaign: --seconds 3600), N at a
# time (default 2: the CI machine's cores).  Prints per harness the
# executions, crashes and coverage (cov: C edges; ft: libFuzzer's features,
# which include the Lua harnesses' Lua line edges), then one summary line:
#   FUZZ harnesses=<n> executions=<total> crashes=<n>
# Exit status: 0 when nothing crashed, 1 when something did, 2 on bad usage.
#
# Builds in build-fuzz/ with clang: the core with
# -fsanitize=fuzzer-no-link,address,undefined, each harness with
# -fsanitize=fuzzer (-DCERTMAINT_FUZZ=ON); clang and its runtimes come from
# scripts/deps.sh.  Each run starts from a copy of tests/fuzz/corpus/<h>/, so
# the committed corpus only changes by hand: minimise a crasher
# (build-fuzz/tests/fuzz/fuzz_<h> -minimize_crash=1 ...) and add it there.
# Crash artifacts land in build-fuzz/artifacts/<h>/, logs in
# build-fuzz/fuzz-run/<h>.log.  Not a ctest test: ctest replays the corpus
# (fuzz/replay_<h>); scripts/test.sh runs this for 60 s each when CI=true.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=60 jobs=2 only=()
usage() { echo "usage: $0 [--seconds S] [--jobs N] [HARNESS...]" >&2; exit 2; }
while (($#)); do
  case $1 in
    --seconds) [ $# -ge 2 ] || usage; seconds=$2; shift 2;;
    --seconds=*) seconds=${1#*=}; shift;;
    --jobs) [ $# -ge 2 ] || usage; jobs=$2; shift 2;;
    --jobs=*) jobs=${1#*=}; shift;;
    -h|--help) usage;;
    -*) usage;;
    [0-9]*) seconds=$1; shift;;   # the old positional SECONDS
    *) only+=("$1"); shift;;
  esac
done
case $seconds in ''|*[!0-9]*|0) usage;; esac
case $jobs in ''|*[!0-9]*|0) usage;; esac
build=$here/build-fuzz

"$here/scripts/deps.sh"   # clang and libclang-rt (libFuzzer, ASan, UBSan)

harnesses=()
if ((${#only[@]})); then
  for h in "${only[@]}"; do
    [ -f "$here/tests/fuzz/fuzz_$h.c" ] || { echo "fuzz.sh: no harness tests/fuzz/fuzz_$h.c" >&2; exit 2; }
    harnesses+=("$h")
  done
else
  for src in "$here"/tests/fuzz/fuzz_*.c; do
    h=$(basename "$src" .c); harnesses+=("${h#fuzz_}")
  done
fi

echo "== build (build-fuzz/, clang, libFuzzer + ASan + UBSan)"
flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined"
flags="$flags -fno-sanitize-recover=undefined"
CC=clang cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCERTMAINT_FUZZ=ON \
  -DCERTMAINT_WERROR=OFF -DCMAKE_C_FLAGS="$flags" >/dev/null
targets=()
for h in "${harnesses[@]}"; do targets+=(--target "fuzz_$h"); done
cmake --build "$build" -j"$(nproc)" "${targets[@]}" -- --no-print-directory >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# One harness: fuzz, then write "<executions> <crashes> <coverage>" to $h.result.
fuzz_one() {
  local h=$1 work=$build/fuzz-run/$1 art=$build/artifacts/$1/ log=$build/fuzz-run/$1.log rc=0
  rm -rf "$work" "$art"; mkdir -p "$work" "$art"
  cp -R "$here/tests/fuzz/corpus/$h/." "$work/"
  "$build/tests/fuzz/fuzz_$h" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art" "$work" >"$log" 2>&1 || rc=$?
  local execs cov crashes
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # a crash skips the final stats: take the last status line
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -oE "ft: [0-9]+" "$log" | tail -1 | cut -d" " -f2 || true)
  crashes=$(find "$art" -type f | wc -l)
  if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then crashes=1; fi   # died without an artifact
  echo "${execs:-0} $crashes ${cov:-?} ${ft:-?} $rc" >"$build/fuzz-run/$h.result"
  printf '   fuzz_%-18s executions=%-10s crashes=%s cov=%s ft=%s\n' "$h" "${execs:-0}" "$crashes" "${cov:-?}" "${ft:-?}"
}

echo "== fuzzing ${#harnesses[@]} harnesses for ${seconds}s each, $jobs at a time"
mkdir -p "$build/fuzz-run"
running=0
for h in "${harnesses[@]}"; do
  rm -f "$build/fuzz-run/$h.result"
  fuzz_one "$h" &
  running=$((running + 1))
  if ((running >= jobs)); then wait -n || true; running=$((running - 1)); fi
done
wait || true

total=0 crashed=0
echo "== summary (${seconds}s each)"
for h in "${harnesses[@]}"; do
  read -r execs crashes cov ft rc <"$build/fuzz-run/$h.result" || { execs=0 crashes=1 cov=? ft=? rc=?; }
  total=$((total + execs))
  verdict=ok
  if [ "$crashes" != 0 ]; then
    crashed=$((crashed + crashes))
    verdict="CRASHED (exit $rc; $(ls "$build/artifacts/$h" 2>/dev/null | tr '\n' ' ')log: build-fuzz/fuzz-run/$h.log)"
  fi
  printf '%-18s executions %-10s crashes %-3s cov %-5s ft %-6s %s\n' "$h" "$execs" "$crashes" "$cov" "$ft" "$verdict"
  if [ "$crashes" != 0 ]; then
    grep -E 'ERROR:|runtime error:|SUMMARY:|property broken|a Lua runtime error' "$build/fuzz-run/$h.log" \
      | head -5 | sed 's/^/   /'
  fi
done
echo "FUZZ harnesses=${#harnesses[@]} executions=$total crashes=$crashed"
[ "$crashed" = 0 ]
