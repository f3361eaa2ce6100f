#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds twice (plain, and with
# ASan+UBSan), runs every ctest test in both. ctest's summary is the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/deps.sh"
jobs=$(nproc)

echo "== build with ASan+UBSan (build-asan/)"
"$here/scripts/build.sh" "$here/build-asan" -DCMAKE_BUILD_TYPE=Debug -DCERTMAINT_SANITIZE=ON
echo "== tests with ASan+UBSan"
ctest --test-dir "$here/build-asan" -j"$jobs" --output-on-failure --timeout 600

echo "== build (build/)"
"$here/scripts/build.sh" "$here/build"
echo "== tests"
ctest --test-dir "$here/build" -j"$jobs" --output-on-failure --timeout 600
