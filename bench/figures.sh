#!/usr/bin/env bash
# figures.sh - the bench/README.md results table: certmaint-bench RUNS times on
# each tree, the median of each figure.
#
#   [BENCH=build/certmaint-bench] [RUNS=3] [FIGURES=load,...] [WARM=1] bash bench/figures.sh TREE...
#
# TREE is a folder certmaint-bench --generate wrote (or any tree in certmagic's
# file layout). Each run is a fresh process (the peak RSS of a figure is the
# process's VmHWM, reset before it); load runs alone in its own process first,
# so its peak RSS is not raised by what other figures left. Prints a Markdown
# table: figure, N, median seconds, median us per item, median peak RSS MiB,
# and the spread (min-max us per item) of the runs. WARM=1 passes --warm (the
# tree read into the page cache before each figure, untimed).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$SRC/build/certmaint-bench}
RUNS=${RUNS:-3}
FIGURES=${FIGURES:-load_staples,scan_due,scan,ocsp,ocsp_noverify,clean,clean_ocsp}
[[ -x $BENCH ]] || { echo "figures.sh: no certmaint-bench at $BENCH (set BENCH=...)" >&2; exit 2; }
(( $# > 0 )) || { echo "usage: bash bench/figures.sh TREE..." >&2; exit 2; }
WARM_ARG=()
[[ -n ${WARM:-} ]] && WARM_ARG=(--warm)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
echo "| tree | figure | N | s (median) | µs per item (median) | min-max µs | peak RSS MiB (median) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for tree in "$@"; do
  : > "$OUT"
  for ((r = 1; r <= RUNS; r++)); do
    "$BENCH" --store "$tree" --bench load "${WARM_ARG[@]}" 2>/dev/null | grep '^RESULT' >> "$OUT"
    "$BENCH" --store "$tree" --bench "$FIGURES" "${WARM_ARG[@]}" 2>/dev/null | grep '^RESULT' >> "$OUT"
  done
  for f in load load_staples scan_due scan ocsp ocsp_noverify clean clean_ocsp; do
    grep -q "^RESULT $f " "$OUT" || continue
    awk -v f="$f" -v tree="$(basename "$tree")" '$2 == f { n = $3; s[++k] = $4; u[k] = $5; m[k] = $6 }
      function median(a, k,   i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((k + 1) / 2)]
      }
      END {
        lo = u[1]; hi = u[1]; for (i = 2; i <= k; i++) { if (u[i] < lo) lo = u[i]; if (u[i] > hi) hi = u[i] }
        printf "| %s | %s | %d | %.3f | %.3f | %.3f-%.3f | %.1f |\n", tree, f, n, median(s, k), median(u, k), lo, hi, median(m, k)
      }' "$OUT"
  done
done
