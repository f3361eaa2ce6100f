#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS=60]: fuzz every harness of tests/fuzz/ with
# libFuzzer for SECONDS each, and print per harness the executions, the
# coverage (libFuzzer's cov:) and whether it crashed.
#
# Builds in build-fuzz/ with clang: the core with
# -fsanitize=fuzzer-no-link,address,undefined, each harness with
# -fsanitize=fuzzer (-DCERTMAINT_FUZZ=ON).  Each run starts from a copy of
# tests/fuzz/corpus/<harness>/, so the committed corpus only changes by hand:
# minimise a crasher (fuzz_<h> -minimize_crash=1 ...) and add it there.
# Crash artifacts land in build-fuzz/artifacts/<harness>/.  Not a ctest test:
# ctest only replays the corpus (fuzz/replay_<harness>).
# Exit status: 0 when no harness crashed, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
case $seconds in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2;; esac
build=$here/build-fuzz

# clang and its libFuzzer/sanitizer runtimes (Debian: libclang-rt-14-dev).
missing=()
for pkg in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== build (build-fuzz/, clang, libFuzzer + ASan + UBSan)"
flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined"
flags="$flags -fno-sanitize-recover=undefined"
CC=clang cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCERTMAINT_FUZZ=ON \
  -DCERTMAINT_WERROR=OFF -DCMAKE_C_FLAGS="$flags" >/dev/null
harnesses=()
for src in "$here"/tests/fuzz/fuzz_*.c; do
  h=$(basename "$src" .c); harnesses+=("${h#fuzz_}")
done
targets=()
for h in "${harnesses[@]}"; do targets+=(--target "fuzz_$h"); done
cmake --build "$build" -j"$(nproc)" "${targets[@]}" -- --no-print-directory >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
crashed=0
summary=()
for h in "${harnesses[@]}"; do
  work=$build/fuzz-run/$h art=$build/artifacts/$h/ log=$build/fuzz-run/$h.log
  rm -rf "$work"; mkdir -p "$work" "$art"
  cp "$here/tests/fuzz/corpus/$h/." "$work/" -R
  echo "== fuzz_$h for ${seconds}s (log: ${log#"$here"/})"
  rc=0
  "$build/tests/fuzz/fuzz_$h" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$art" "$work" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$execs" ]; then   # a crash skips the final stats: take the last status line
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  verdict=ok
  if [ "$rc" != 0 ] || grep -qE '^==[0-9]+==ERROR|deadly signal|runtime error:' "$log"; then
    verdict="CRASHED (exit $rc; $(ls "$art" | tr '\n' ' '))"
    crashed=1
    grep -E 'ERROR:|runtime error:|SUMMARY:|property broken' "$log" | head -5 | sed 's/^/   /'
  fi
  summary+=("$(printf '%-12s execs %-10s cov %-6s %s' "$h" "${execs:-?}" "${cov:-?}" "$verdict")")
done
echo "== summary (${seconds}s each)"
printf '%s\n' "${summary[@]}"
exit "$crashed"
