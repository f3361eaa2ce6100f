#!/usr/bin/env bash
# certmaint-bench on N = 100: the generator writes a tree in certmagic's
# layout, every figure runs through the engine and prints its RESULT line, the
# figures that delete work on a copy (the tree is whole afterwards), and bad
# arguments are refused with a clear message. Figures are printed, never
# compared with a bound: benchmarks are not tests.
source "$(dirname "$0")/lib.bash"
BENCH=${CERTMAINT_BENCH_BIN:?CERTMAINT_BENCH_BIN must point at certmaint-bench}
tree=$WORK/tree
set +e
"$BENCH" --generate 100 --store "$tree" --due 0.1 --expired 0.05 --stale 0.1 --seed 7 >"$WORK/gen.out" 2>"$WORK/gen.err"
rc=$?
set -e
check "the generator writes 100 certificates (exit $rc: $(tail -n 1 "$WORK/gen.err"))" test "$rc" -eq 0
issuer=$(ls "$tree/certificates" | head -n 1)
crts() { find "$tree/certificates" -name '*.crt' | wc -l; }
staples() { find "$tree/ocsp" -type f | wc -l; }
check "100 sets under certificates/$issuer/<name>/<name>.crt|.key|.json" \
  bash -c "[ $(crts) -eq 100 ] && [ \$(find '$tree/certificates' -name '*.key' | wc -l) -eq 100 ] && [ \$(find '$tree/certificates' -name '*.json' | wc -l) -eq 100 ]"
check "private keys are 0600" bash -c "[ -z \"\$(find '$tree/certificates' -name '*.key' ! -perm 0600)\" ]"
check "one staple per certificate under ocsp/" test "$(staples)" -eq 100

set +e
"$BENCH" --store "$tree" >"$WORK/bench.out" 2>"$WORK/bench.err"
rc=$?
set -e
cat "$WORK/bench.out"
check "every figure runs (exit $rc)" test "$rc" -eq 0
for f in load load_staples scan scan_due clean clean_ocsp ocsp ocsp_noverify; do
  check "a RESULT line for $f: <figure> <N> <seconds> <per_item_us> <peak_rss_MiB>" \
    grep -Eq "^RESULT $f [0-9]+ [0-9]+\.[0-9]+ [0-9]+\.[0-9]+ [0-9]+\.[0-9]+$" "$WORK/bench.out"
done
n_of() { awk -v f="$1" '$1 == "RESULT" && $2 == f { print $3 }' "$WORK/bench.out"; }
check "load and load_staples count the 100 certificates" bash -c "[ '$(n_of load)' = 100 ] && [ '$(n_of load_staples)' = 100 ]"
check "ocsp verifies one response per certificate" test "$(n_of ocsp)" = 100
# the 95 unexpired certificates want a staple; all but the stale ones (at most 10) come from
# storage, attached while loading as start-up does; the pass fetches the rest
line=$(grep 'load_staples: ' "$WORK/bench.err" | head -1)
preloaded=$(sed -n 's/.*load_staples: \([0-9]*\) staples attached while loading, \([0-9]*\) by the OCSP pass from storage (\([0-9]*\) certificates.*/\1/p' <<<"$line")
by_pass=$(sed -n 's/.*load_staples: \([0-9]*\) staples attached while loading, \([0-9]*\) by the OCSP pass from storage (\([0-9]*\) certificates.*/\2/p' <<<"$line")
left=$(sed -n 's/.*load_staples: \([0-9]*\) staples attached while loading, \([0-9]*\) by the OCSP pass from storage (\([0-9]*\) certificates.*/\3/p' <<<"$line")
fetched=$(sed -n 's/.*load_staples: .*staple_fetch_failed=\([0-9]*\).*/\1/p' "$WORK/bench.err")
check "load_staples attaches every fresh stored staple of the 95 unexpired while loading ($preloaded, then $by_pass by the pass), fetches only the stale ($fetched of $left)" \
  bash -c "[ -n '$preloaded' ] && [ '$preloaded' -ge 85 ] && [ '$by_pass' = 0 ] && [ \$(( $preloaded + $left )) -eq 95 ] && [ '${fetched:-0}' = '$left' ]"
check "scan_due finds the 10 due and the 5 expired, and their jobs fail at once" grep -Eq "scan_due: 15 due, 15 renewals failed" "$WORK/bench.err"
check "scan finds nothing due afterwards" bash -c "! grep -q 'scan: .* were due' '$WORK/bench.err'"
check "ocsp: the 90 fresh responses verify" grep -q "ocsp: 90 of 100 responses verified and fresh" "$WORK/bench.err"
check "clean deletes the 5 expired certificates" grep -q "clean: 5 certificates deleted" "$WORK/bench.err"
check "clean_ocsp deletes the 10 stale staples" grep -Eq "clean_ocsp: 0 certificates deleted, 0 kept, 10 staples deleted" "$WORK/bench.err"
check "the tree itself is whole afterwards (cleaned on a copy)" bash -c "[ $(crts) -eq 100 ] && [ $(staples) -eq 100 ]"
check "clean reports its time by step" grep -Eq "clean: time by step: certs [0-9.]+ s" "$WORK/bench.err"
"$BENCH" --store "$tree" --bench load,clean --warm >"$WORK/warm.out" 2>"$WORK/warm.err"
check "--warm reads the tree before each figure and the figures still run" \
  bash -c "[ \$(grep -c 'warm: the tree read in' '$WORK/warm.err') -eq 2 ] && grep -q '^RESULT clean 100 ' '$WORK/warm.out'"

set +e
"$BENCH" --store "$tree" --bench load,bogus >/dev/null 2>"$WORK/e1"; rc1=$?
"$BENCH" --store "$WORK/none" --bench load >/dev/null 2>"$WORK/e2"; rc2=$?
"$BENCH" --generate 10 --store "$tree" >/dev/null 2>"$WORK/e3"; rc3=$?
"$BENCH" --generate 0 --store "$WORK/t0" >/dev/null 2>"$WORK/e4"; rc4=$?
set -e
check "an unknown figure is refused, naming it (exit $rc1)" bash -c "[ $rc1 -eq 2 ] && grep -q \"unknown figure 'bogus'\" '$WORK/e1'"
check "a folder that is not a tree is refused, naming it (exit $rc2)" bash -c "[ $rc2 -eq 1 ] && grep -q '$WORK/none: no certificates/ folder' '$WORK/e2'"
check "the generator refuses a folder that already holds certificates (exit $rc3: $(head -c 200 "$WORK/e3"))" bash -c "[ $rc3 -ne 0 ] && [ $(crts) -eq 100 ]"
check "--generate 0 is refused (exit $rc4)" bash -c "[ $rc4 -eq 2 ] && grep -q -- '--generate must be' '$WORK/e4'"
finish
