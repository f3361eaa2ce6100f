#!/usr/bin/env bash
# Caddy 2.6 and certmaint on one storage tree against a real Pebble (certmagic's
# layout): Caddy obtains a certificate and makes the ACME account; certmaint
# loads Caddy's certificate instead of ordering another, obtains its own with
# Caddy's account (no second account at Pebble), and Caddy then serves the
# certificate certmaint obtained without ordering it again.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"
command -v caddy >/dev/null || { fail "caddy is not installed (scripts/deps.sh installs it)"; finish; exit 1; }

pebble_start --nosleep
data=$CERTMAINT_DATA
store=$data/certificates/$PEBBLE_ISSUER_KEY
email=ops@example.test
https_port=${PEBBLE_SPARE_PORTS%% *}
mkdir -p "$data"
pebble_root > "$WORK/root.pem"

caddyfile() { # names...
  cat <<CADDY
{
	admin off
	storage file_system $data
	skip_install_trust
	http_port $PEBBLE_HTTP_PORT
	https_port $https_port
	auto_https disable_redirects
	email $email
	cert_issuer acme {
		dir $PEBBLE_DIR_URL
		trusted_roots $PEBBLE_CA_BUNDLE
		disable_tlsalpn_challenge
	}
	ocsp_stapling off
}
CADDY
  local n
  for n in "$@"; do printf '%s:%s {\n\trespond "hello from caddy"\n}\n' "$n" "$https_port"; done
}
caddy_pid=
caddy_start() {
  caddyfile "$@" > "$WORK/Caddyfile"
  HOME=$WORK XDG_CONFIG_HOME=$WORK XDG_DATA_HOME=$WORK \
    caddy run --config "$WORK/Caddyfile" --adapter caddyfile >>"$WORK/caddy.log" 2>&1 &
  caddy_pid=$!; PIDS+=("$caddy_pid")
}
caddy_stop() { kill "$caddy_pid" 2>/dev/null || true; wait "$caddy_pid" 2>/dev/null || true; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
served_serial() {
  echo | openssl s_client -connect "127.0.0.1:$https_port" -servername "$1" 2>/dev/null |
    openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}
verifies() { # chain file: leaf first, the rest untrusted intermediates
  [ -s "$1" ] || return 1
  awk 'f<1{print} /END CERTIFICATE/{f++}' "$1" > "$WORK/leaf.pem"
  awk 'f>=1{print} /END CERTIFICATE/{f++}' "$1" > "$WORK/rest.pem"
  openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/rest.pem" "$WORK/leaf.pem" >/dev/null 2>&1
}

# 1. Caddy obtains caddys.example.test and registers the account.
caddy_start caddys.example.test
check "Caddy obtains caddys.example.test from Pebble into the shared tree" \
  wait_for 30 test -s "$store/caddys.example.test/caddys.example.test.crt"
caddy_stop
check "Caddy's account is stored in certmagic's layout" \
  bash -c "ls $data/acme/$PEBBLE_ISSUER_KEY/users/$email/*.key >/dev/null 2>&1"
caddy_serial=$(serial_of "$store/caddys.example.test/caddys.example.test.crt")
accounts_before=$(grep -c 'POST /sign-me-up' "$PEBBLE_LOG" || true)
issued_before=$(pebble_issued)

# 2. certmaint on the same tree: loads Caddy's, obtains its own with Caddy's account.
cat > "$WORK/policy.lua" <<LUA
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = "$data" },
  issuer = certmaint.issuer.acme {
    directory = "$PEBBLE_DIR_URL",
    ca_bundle = "$PEBBLE_CA_BUNDLE",
    email = "$email",
    challenges = { http01 = { listen = "127.0.0.1:$PEBBLE_HTTP_PORT" } },
  },
  certificates = { "caddys.example.test", "mine.example.test" },
}
LUA
set +e; "$BIN" --log-level info once "$WORK/policy.lua" >"$WORK/once.out" 2>&1; rc=$?; set -e
check "certmaint once succeeds on Caddy's tree" test "$rc" -eq 0
check "it loads Caddy's certificate and obtains only its own" grep -q 'loaded 1, obtained 1' "$WORK/once.out"
check "Pebble issued exactly one more certificate" test "$(pebble_issued)" -eq $((issued_before + 1))
check "certmaint used Caddy's account: no new account at Pebble" \
  bash -c "! grep -q 'There are now 2 accounts' '$PEBBLE_LOG'"
check "and stored no second account" \
  test "$(find "$data/acme/$PEBBLE_ISSUER_KEY/users" -name '*.key' | wc -l)" -eq 1
check "Caddy's certificate is untouched" \
  test "$(serial_of "$store/caddys.example.test/caddys.example.test.crt")" = "$caddy_serial"
check "certmaint's chain verifies against Pebble's root" verifies "$store/mine.example.test/mine.example.test.crt"
check "certmaint stored its key 0600 where Caddy looks" \
  test "$(stat -c %a "$store/mine.example.test/mine.example.test.key")" = 600
set +e; "$BIN" status "$WORK/policy.lua" --json >"$WORK/status.json" 2>/dev/null; set -e
check "certmaint's status shows Caddy's certificate with its serial" \
  test "$(json_eval "$WORK/status.json" '(function() for _, c in ipairs(v) do if c.names[1] == "caddys.example.test" then return (c.serial:gsub("^0+", "")) end end end)()')" = \
       "$(tr A-F a-f <<<"$caddy_serial" | sed 's/^0*//')"

# 3. Caddy again, now also for mine.example.test: it serves certmaint's certificate.
issued_before=$(pebble_issued)
mine_crt=$store/mine.example.test/mine.example.test.crt
mine_serial=$( [ -s "$mine_crt" ] && serial_of "$mine_crt" || echo "no certificate from certmaint")
caddy_start caddys.example.test mine.example.test
check "Caddy serves the certificate certmaint obtained" \
  wait_for 20 bash -c "[ \"\$(echo | openssl s_client -connect 127.0.0.1:$https_port -servername mine.example.test 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | cut -d= -f2)\" = '$mine_serial' ]"
check "and its own" test "$(served_serial caddys.example.test)" = "$caddy_serial"
check "clients trusting Pebble's root reach Caddy with certmaint's certificate" \
  bash -c "curl -sf --resolve mine.example.test:$https_port:127.0.0.1 --cacert $WORK/root.pem https://mine.example.test:$https_port/ | grep -q 'hello from caddy'"
caddy_stop
check "Caddy ordered nothing new" test "$(pebble_issued)" -eq "$issued_before"
pebble_stop
finish
