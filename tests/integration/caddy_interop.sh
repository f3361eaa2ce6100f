#!/usr/bin/env bash
# certmaint and Caddy share one storage tree (certmagic's layout): Caddy serves
# the certificate certmaint stored, under the CA certmaint made, and certmaint
# loads a certificate Caddy obtained instead of obtaining another.
source "$(dirname "$0")/lib.bash"
command -v caddy >/dev/null || { fail "caddy is not installed (scripts/deps.sh installs it)"; finish; exit 1; }

data=$CERTMAINT_DATA
cat > "$WORK/policy.lua" <<LUA
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = "$data" },
  issuer = certmaint.issuer.internal { lifetime = "7d" },
  certificates = { "mine.test", "caddys.test" },
}
LUA
# certmaint first, for mine.test only (caddys.test comes from Caddy below);
# only `run` creates a missing storage root
mkdir -p "$data"
sed 's/"mine.test", "caddys.test"/"mine.test"/' "$WORK/policy.lua" > "$WORK/mine.lua"
set +e; "$BIN" --log-level warn once "$WORK/mine.lua" >"$WORK/out" 2>&1; rc=$?; set -e
check "certmaint obtains mine.test" bash -c "[ $rc -eq 0 ] && grep -q 'obtained 1' $WORK/out"

port=$((20000 + RANDOM % 20000))
cat > "$WORK/Caddyfile" <<CADDY
{
	admin off
	storage file_system $data
	skip_install_trust
	http_port $((port + 1))
	https_port $port
	auto_https disable_redirects
}
mine.test:$port, caddys.test:$port {
	tls internal
	respond "hello from caddy"
}
CADDY
HOME=$WORK XDG_CONFIG_HOME=$WORK XDG_DATA_HOME=$WORK \
  caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
PIDS+=($!)
served() { echo | openssl s_client -connect 127.0.0.1:$port -servername "$1" 2>/dev/null | openssl x509 -noout -serial 2>/dev/null; }
check "Caddy starts and serves TLS" wait_for 20 bash -c "echo | openssl s_client -connect 127.0.0.1:$port -servername mine.test 2>/dev/null | grep -q 'BEGIN CERTIFICATE'"
check "Caddy serves the very certificate certmaint stored" \
  test "$(served mine.test)" = "$(openssl x509 -in "$data/certificates/local/mine.test/mine.test.crt" -noout -serial)"
check "clients trusting certmaint's root reach Caddy (one CA for both)" \
  bash -c "curl -sf --resolve mine.test:$port:127.0.0.1 --cacert $data/pki/authorities/local/root.crt https://mine.test:$port/ | grep -q 'hello from caddy'"
check "Caddy stored caddys.test in the same tree" wait_for 20 test -s "$data/certificates/local/caddys.test/caddys.test.crt"
kill "${PIDS[-1]}" 2>/dev/null || true

set +e; "$BIN" --log-level warn once "$WORK/policy.lua" >"$WORK/out" 2>&1; rc=$?; set -e
# certmaint-bench reads the tree Caddy and certmaint wrote together
bench_out=$("${CERTMAINT_BENCH_BIN:?}" --store "$data" --bench load 2>"$WORK/bench.err" || true)
check "certmaint-bench loads both certificates of the shared tree, Caddy's included ($bench_out)" \
  bash -c "grep -Eq '^RESULT load 2 [0-9.]+ [0-9.]+ [0-9.]+$' <<< '$bench_out'"
check "certmaint-bench loads Caddy's certificate without complaint" bash -c "! grep -q 'did not load' '$WORK/bench.err'"
check "certmaint loads Caddy's certificate instead of obtaining one" \
  bash -c "[ $rc -eq 0 ] && grep -q 'loaded 2, obtained 0' $WORK/out"
set +e; "$BIN" status "$WORK/policy.lua" --json >"$WORK/status.json" 2>/dev/null; set -e
check "certmaint's status shows Caddy's certificate" \
  test "$(json_eval "$WORK/status.json" 'v[2].names[1] .. " " .. v[2].serial:gsub("^0+", "")')" = \
       "caddys.test $(openssl x509 -in "$data/certificates/local/caddys.test/caddys.test.crt" -noout -serial | cut -d= -f2 | tr A-F a-f | sed 's/^0*//')"
finish
