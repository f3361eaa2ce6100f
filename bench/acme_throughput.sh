#!/usr/bin/env bash
# acme_throughput.sh - certificates obtained per minute against a real Pebble.
#
#   [BIN=build/certmaint] [N=50] [RUNS=3] [LEGS="lego_serial lego_dns8 caddy certmaint"]
#   bash bench/acme_throughput.sh
#
# For each leg and each run: a fresh Pebble (tests/integration/pebble.bash:
# real validation, PEBBLE_VA_NOSLEEP=1, its default 5% badNonce rejection and
# 50% authorization reuse left on), N fresh names, wall time from the client's
# start until all N certificates are on disk; certs/min = N * 60 / seconds.
# Prints every run, then a table of medians. Registered in no ctest: it prints
# figures.
#   lego_serial  one `lego run` process per name, one after another, http-01
#   lego_dns8    8 lego processes at once (names split 8 ways), dns-01 through
#                pebble-challtestsrv's management API (lego's exec provider)
#   caddy        Caddy (Debian 2.6): one Caddyfile with N sites, acme_ca Pebble,
#                storage file_system, http_port = Pebble's httpPort, tls-alpn-01
#                off; timed until all N .crt files are in storage (its account is
#                made first by a one-site warm-up, not timed: see leg_caddy)
#   certmaint    one `certmaint once` on a policy with certmaint.issuer.acme,
#                http-01 on one listener (Pebble's httpPort)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
export CERTMAINT_BIN=${BIN:-$SRC/build/certmaint} CERTMAINT_SOURCE_DIR=$SRC
export LUA_PATH="$SRC/lua/?.lua;$SRC/lua/?/init.lua;;" LUA_CPATH="$(dirname "$CERTMAINT_BIN")/lua/?.so;;"
N=${N:-50}
RUNS=${RUNS:-3}
LEGS=${LEGS:-lego_serial lego_dns8 caddy certmaint}
source "$SRC/tests/integration/lib.bash"
source "$SRC/tests/integration/pebble.bash"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
per_min() { awk -v n="$N" -v s="$1" 'BEGIN { printf "%.1f\n", n * 60 / s }'; }
names() { local i; for i in $(seq 1 "$N"); do echo "host$i.run$1.bench.test"; done; }
fail_leg() { echo "acme_throughput: $1" >&2; [ -n "${2:-}" ] && tail -n 15 "$2" >&2; return 1; }

lego_cmd() { # path args...
  local path=$1; shift
  LEGO_CA_CERTIFICATES=$PEBBLE_CA_BUNDLE lego --server "$PEBBLE_DIR_URL" --accept-tos \
    --email bench@example.com --path "$path" "$@"
}

leg_lego_serial() { # run dir -> seconds
  local name t0
  t0=$(now)
  for name in $(names "$1"); do
    lego_cmd "$2/lego" --http --http.port "127.0.0.1:$PEBBLE_HTTP_PORT" -d "$name" run \
      >>"$2/lego.log" 2>&1 || { fail_leg "lego failed for $name" "$2/lego.log"; return 1; }
  done
  since "$t0"
}

leg_lego_dns8() {
  local run=$1 dir=$2 w pids=() t0 rc=0
  cat > "$dir/txt.sh" <<SH
#!/bin/sh
# lego's exec provider: present|cleanup FQDN VALUE
case \$1 in
  present) exec curl -sf -o /dev/null -d "{\"host\":\"\$2\",\"value\":\"\$3\"}" $CHALLTEST_MGMT/set-txt ;;
  cleanup) exec curl -sf -o /dev/null -d "{\"host\":\"\$2\"}" $CHALLTEST_MGMT/clear-txt ;;
esac
SH
  chmod +x "$dir/txt.sh"
  names "$run" > "$dir/names"
  t0=$(now)
  for w in $(seq 0 7); do
    (
      awk -v w="$w" 'NR % 8 == w' "$dir/names" | while read -r name; do
        EXEC_PATH=$dir/txt.sh EXEC_POLLING_INTERVAL=1 EXEC_PROPAGATION_TIMEOUT=30 \
          lego_cmd "$dir/lego$w" --dns exec --dns.disable-cp --dns.resolvers "$PEBBLE_DNS" \
          -d "$name" run >>"$dir/lego$w.log" 2>&1 || { echo "lego failed for $name" >&2; exit 1; }
      done
    ) &
    pids+=($!)
  done
  for w in "${pids[@]}"; do wait "$w" || rc=1; done
  [ $rc = 0 ] || { fail_leg "a lego dns-01 worker failed" "$(ls -t "$dir"/lego*.log | head -1)"; return 1; }
  since "$t0"
}

# all N certificates of this run in certmagic's layout under $1
count_certs() { # storage run
  local n=0 name
  for name in $(names "$2"); do
    [ -s "$1/certificates/$PEBBLE_ISSUER_KEY/$name/$name.crt" ] && n=$((n + 1))
  done
  echo $n
}

caddyfile() { # dir names... -> Caddyfile on stdout
  local dir=$1 name; shift
  cat <<CADDY
{
	admin off
	storage file_system $dir/storage
	skip_install_trust
	http_port $PEBBLE_HTTP_PORT
	https_port ${PEBBLE_SPARE_PORTS%% *}
	auto_https disable_redirects
	email bench@example.com
	cert_issuer acme {
		dir $PEBBLE_DIR_URL
		trusted_roots $PEBBLE_CA_BUNDLE
		disable_tlsalpn_challenge
	}
	ocsp_stapling off
}
CADDY
  for name in "$@"; do printf '%s {\n\trespond "ok"\n}\n' "$name"; done
}

# caddy_until DIR CADDYFILE COUNT_CMD...: run Caddy until COUNT_CMD prints "ok"
caddy_until() {
  local dir=$1 file=$2 pid end; shift 2
  HOME=$dir XDG_CONFIG_HOME=$dir XDG_DATA_HOME=$dir \
    caddy run --config "$file" --adapter caddyfile >>"$dir/caddy.log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  end=$((SECONDS + 600))
  until [ "$("$@")" = ok ]; do
    kill -0 $pid 2>/dev/null || { fail_leg "Caddy exited" "$dir/caddy.log"; return 1; }
    [ $SECONDS -lt $end ] || { kill $pid; fail_leg "Caddy: not done after 600 s" "$dir/caddy.log"; return 1; }
    sleep 0.1
  done
  kill $pid; wait $pid 2>/dev/null || true
}

leg_caddy() {
  local run=$1 dir=$2 t0 t
  # Warm-up, not timed: Caddy 2.6 creating its account while 50 obtains start
  # at once races on the account file ("getting ACME account: unexpected end of
  # JSON input") and retries 60 s later; one site first makes the account.
  caddyfile "$dir" "warm.run$run.bench.test" > "$dir/Caddyfile.warm"
  caddy_until "$dir" "$dir/Caddyfile.warm" bash -c \
    "[ -s '$dir/storage/certificates/$PEBBLE_ISSUER_KEY/warm.run$run.bench.test/warm.run$run.bench.test.crt' ] && echo ok" || return 1
  caddyfile "$dir" $(names "$run") > "$dir/Caddyfile"
  t0=$(now)
  caddy_until "$dir" "$dir/Caddyfile" all_certs "$dir/storage" "$run" || return 1
  since "$t0"
}
all_certs() { [ "$(count_certs "$1" "$2")" = "$N" ] && echo ok || true; }

leg_certmaint() {
  local run=$1 dir=$2 t0
  mkdir -p "$dir/storage"
  {
    cat <<LUA
-- generated by bench/acme_throughput.sh
local certmaint = require "certmaint"
local names = {}
LUA
    for name in $(names "$run"); do echo "names[#names + 1] = \"$name\""; done
    cat <<LUA
return certmaint.policy {
  storage = certmaint.storage.file { root = "$dir/storage" },
  issuer = certmaint.issuer.acme {
    directory = "$PEBBLE_DIR_URL",
    ca_bundle = "$PEBBLE_CA_BUNDLE",
    email = "bench@example.com",
    challenges = { http01 = { listen = "127.0.0.1:$PEBBLE_HTTP_PORT" } },
  },
  certificates = names,
}
LUA
  } > "$dir/policy.lua"
  t0=$(now)
  "$CERTMAINT_BIN" --log-level warn once "$dir/policy.lua" >"$dir/certmaint.log" 2>&1 ||
    { fail_leg "certmaint once failed" "$dir/certmaint.log"; return 1; }
  local t=$(since "$t0")
  [ "$(count_certs "$dir/storage" "$run")" = "$N" ] ||
    { fail_leg "certmaint: $(count_certs "$dir/storage" "$run") of $N certificates in storage" "$dir/certmaint.log"; return 1; }
  echo "$t"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A RESULT
for leg in $LEGS; do
  secs=()
  for run in $(seq 1 "$RUNS"); do
    dir=$WORK/$leg-$run
    mkdir -p "$dir"
    pebble_start --nosleep || exit 1
    issued0=$(pebble_issued)
    if s=$("leg_$leg" "$run" "$dir"); then
      issued=$(( $(pebble_issued) - issued0 ))
      printf '%-12s run %d: %3d certificates in %7.2f s = %6.1f/min (Pebble issued %d)\n' \
        "$leg" "$run" "$N" "$s" "$(per_min "$s")" "$issued"
      secs+=("$s")
    else
      echo "$leg run $run: failed (Pebble log tail follows)" >&2; tail -n 5 "$PEBBLE_LOG" >&2
    fi
    pebble_stop
  done
  if [ ${#secs[@]} -gt 0 ]; then RESULT[$leg]=$(printf '%s\n' "${secs[@]}" | median); fi
done

echo
printf '| %-12s | %-6s | %-14s | %-12s |\n' client names "median seconds" certs/min
printf '| %-12s | %-6s | %-14s | %-12s |\n' ------------ ------ -------------- ------------
for leg in $LEGS; do
  if [ -n "${RESULT[$leg]:-}" ]; then
    printf '| %-12s | %-6s | %14.2f | %12.1f |\n' "$leg" "$N" "${RESULT[$leg]}" "$(per_min "${RESULT[$leg]}")"
  else
    printf '| %-12s | %-6s | %14s | %12s |\n' "$leg" "$N" failed -
  fi
done
