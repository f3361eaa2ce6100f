#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds twice (plain, and with
# ASan+UBSan), runs every ctest test in both. ctest's summary is the last line.
# With CI=true it first fuzzes each harness for 60 s (scripts/fuzz.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/deps.sh"
jobs=$(nproc)

# CI: every libFuzzer harness for 60 s first (about 8 min on 2 cores); a crash
# fails the run, after the ctest runs, so ctest's summary stays the last line.
fuzz_rc=0
if [ "${CI:-}" = true ]; then
  "$here/scripts/fuzz.sh" --seconds 60 || fuzz_rc=$?
fi

echo "== build with ASan+UBSan (build-asan/)"
"$here/scripts/build.sh" "$here/build-asan" -DCMAKE_BUILD_TYPE=Debug -DCERTMAINT_SANITIZE=ON
echo "== tests with ASan+UBSan"
ctest --test-dir "$here/build-asan" -j"$jobs" --output-on-failure --timeout 600

echo "== build (build/)"
"$here/scripts/build.sh" "$here/build"
echo "== tests"
ctest --test-dir "$here/build" -j"$jobs" --output-on-failure --timeout 600
[ "$fuzz_rc" = 0 ]
