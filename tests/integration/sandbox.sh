#!/usr/bin/env bash
# What a spec tests is what runs: the policy files spec/unit/testing_spec.lua
# loads with testing.load_policy behave the same under the real binary.
source "$(dirname "$0")/lib.bash"
mkdir -p "$CERTMAINT_DATA"

FIX=$SRC/spec/fixtures/policies
out=$WORK/out; err=$WORK/err
run() { set +e; "$BIN" "$@" >"$out" 2>"$err"; rc=$?; set -e; }

export CERTMAINT_METRICS=$WORK/metrics.prom
run once "$FIX/hook_os_rename.lua"
check "os.rename in a hook: the certificate is still obtained, once exits 1 (the deploy failed)" \
  bash -c "[ $rc -eq 1 ] && grep -q 'obtained 1' $out"
check "os.rename in a hook: the daemon fails it as the spec does" \
  grep -q 'event=hook_failed .*error=".*hook_os_rename.lua:13: os.rename is not available in a policy" .*hook=on_renewed' "$err"
check "os.rename in a hook: the metrics file never appears" test ! -e "$CERTMAINT_METRICS"

rm -rf "$CERTMAINT_DATA" "$CERTMAINT_METRICS.tmp"; mkdir -p "$CERTMAINT_DATA"
run once "$FIX/hook_write_file.lua"
check "certmaint.write_file in a hook: no hook failure" bash -c "[ $rc -eq 0 ] && ! grep -q hook_failed $err"
check "certmaint.write_file in a hook: the file holds what the spec expects" \
  grep -q '^certmaint_not_after{name="metrics.test"} [0-9]*$' "$CERTMAINT_METRICS"
check "certmaint.write_file in a hook: mode 0644 as asked" test "$(stat -c %a "$CERTMAINT_METRICS")" = 644
check "certmaint.write_file leaves no temp file" bash -c "! ls -A $WORK | grep -q tmp"

finish
