#!/usr/bin/env bash
# The challenge solvers other than standalone http-01, against a real Pebble
# with real validation (pebble.bash): webroot (files served by another web
# server, webroot_server.lua on Pebble's httpPort), dns-01 from policy hooks
# driving pebble-challtestsrv's management API (one wildcard certificate),
# both renewed by the window rule while daemons run (30 s certificates),
# a dns-01 hook that fails (an error naming the name and the challenge), and
# distributed solving: two instances on one storage, the one answering
# http-01 is not the one that ordered, and Caddy on the same storage
# answering certmaint's challenges and the other way round.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/pebble.bash"

pebble_start --nosleep --validity 30
pebble_root > "$WORK/root.pem"
store=$CERTMAINT_DATA/certificates/$PEBBLE_ISSUER_KEY

# verified NAME: the stored chain of NAME verifies against Pebble's root
verified() {
  local crt=$1/$2/$2.crt
  awk 'f<1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/leaf.pem"
  awk 'f>=1{print} /END CERTIFICATE/{f++}' "$crt" > "$WORK/rest.pem"
  openssl verify -CAfile "$WORK/root.pem" -untrusted "$WORK/rest.pem" "$WORK/leaf.pem" >/dev/null
}
sans() { openssl x509 -in "$1/$2/$2.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2; }
issued_before=0

# --- webroot --------------------------------------------------------------------
export WEBROOT=$WORK/www
mkdir -p "$WEBROOT" "$CERTMAINT_DATA"
# lua5.4 itself in the background (not lib.bash's lua54 function, whose
# subshell would be what $! names and a TERM would leave the server running)
www_start() {
  ${CERTMAINT_HOST_PRELOAD:+env LD_PRELOAD=$CERTMAINT_HOST_PRELOAD ASAN_OPTIONS=detect_leaks=0} \
    lua5.4 "$SRC/tests/integration/webroot_server.lua" "$WEBROOT" "127.0.0.1:$PEBBLE_HTTP_PORT" >"$WORK/www.log" 2>&1 &
  www_pid=$!; PIDS+=("$www_pid")
  wait_for 10 grep -q "^listening" "$WORK/www.log"
}
www_stop() {
  kill -TERM "$www_pid"
  set +e; wait "$www_pid"; rc=$?; set -e
  check "webroot: its web server stops on SIGTERM (exit $rc)" test "$rc" -eq 0
}
check "the webroot's web server listens on Pebble's httpPort" www_start
set +e; "$BIN" once "$POL/acme_webroot.lua" 2>"$WORK/webroot.log"; rc=$?; set -e
check "webroot: certmaint once obtains both certificates (exit $rc)" test "$rc" -eq 0
check "webroot: both obtained" test "$(grep -c 'event=obtained' "$WORK/webroot.log")" -eq 2
for n in web.example.test w1.example.test; do
  check "webroot: the chain of $n verifies against Pebble's root" verified "$store" "$n"
done
s=$(sans "$store" w1.example.test)
check "webroot: the two-name certificate holds both names" bash -c "grep -q 'DNS:w1.example.test' <<<'$s' && grep -q 'DNS:w2.example.test' <<<'$s'"
check "webroot: the web server answered Pebble's three validations from the files (200)" \
  test "$(grep -c '^200 .*/.well-known/acme-challenge/' "$WORK/www.log")" -ge 3
check "webroot: Pebble validated over HTTP" grep -q "Attempting to validate w/ HTTP: http://w2.example.test:$PEBBLE_HTTP_PORT/" "$PEBBLE_LOG"
check "webroot: no token file or folder is left in the webroot" test -z "$(ls -A "$WEBROOT")"
check "webroot: no challenge is left in storage" \
  bash -c "[ -z \"\$(ls -A '$CERTMAINT_DATA/acme/$PEBBLE_ISSUER_KEY/challenge_tokens' 2>/dev/null)\" ]"
check "webroot: Pebble issued two certificates" test "$(pebble_issued)" -eq 2
issued_before=$(pebble_issued)
www_stop

# --- dns-01, one wildcard ----------------------------------------------------------------
set +e; "$BIN" once "$POL/acme_dns01.lua" 2>"$WORK/dns.log"; rc=$?; set -e
check "dns-01: certmaint once obtains both certificates (exit $rc)" test "$rc" -eq 0
check "dns-01: both obtained" test "$(grep -c 'event=obtained' "$WORK/dns.log")" -eq 2
for n in wildcard_.wild.example.test dns.example.test; do
  check "dns-01: the chain of $n verifies against Pebble's root" verified "$store" "$n"
done
s=$(sans "$store" wildcard_.wild.example.test)
check "dns-01: the wildcard certificate holds *.wild.example.test and wild.example.test" \
  bash -c "grep -q 'DNS:\*.wild.example.test' <<<'$s' && grep -q 'DNS:wild.example.test' <<<'$s'"
check "dns-01: Pebble validated through DNS (challtestsrv)" grep -q "_acme-challenge.wild.example.test" "$CHALLTEST_LOG"
check "dns-01: Pebble issued two more certificates" test "$(pebble_issued)" -eq $((issued_before + 2))
check "dns-01: no hook failed" bash -c "! grep -q 'event=hook_failed' '$WORK/dns.log'"
issued_before=$(pebble_issued)

# --- a dns-01 hook that fails ----------------------------------------------------------
set +e; FAIL_NAME=nodns.example.test "$BIN" once "$POL/acme_dns01.lua" 2>"$WORK/dnsfail.log"; rc=$?; set -e
check "a failing dns-01 hook: certmaint once fails (exit $rc)" test "$rc" -ne 0
check "the error names the name, the challenge and the hook's reason" \
  grep -q 'dns-01 challenge for \\"nodns.example.test\\": present(_acme-challenge.nodns.example.test) failed: the DNS provider refused _acme-challenge.nodns.example.test' "$WORK/dnsfail.log"
check "nothing was issued for it" test "$(pebble_issued)" -eq "$issued_before"

# --- distributed solving: the instance answering is not the one ordering ------------
export SHARED_DATA=$WORK/shared
mkdir -p "$SHARED_DATA"
ROLE=answer "$BIN" run "$POL/acme_distributed.lua" 2>"$WORK/answer.log" &
answer_pid=$!; PIDS+=("$answer_pid")
check "distributed: the answering daemon stands by on Pebble's httpPort" \
  wait_for 10 grep -q "event=acme_http01_listening.*port=$PEBBLE_HTTP_PORT" "$WORK/answer.log"
set +e; ROLE=order "$BIN" once "$POL/acme_distributed.lua" 2>"$WORK/order.log"; rc=$?; set -e
check "distributed: the ordering instance obtains both certificates (exit $rc)" test "$rc" -eq 0
check "distributed: both obtained" test "$(grep -c 'event=obtained' "$WORK/order.log")" -eq 2
dstore=$SHARED_DATA/certificates/$PEBBLE_ISSUER_KEY
for n in dist.example.test dist2.example.test; do
  check "distributed: the chain of $n verifies against Pebble's root" verified "$dstore" "$n"
done
for n in dist.example.test dist2.example.test www.dist2.example.test; do
  check "distributed: the other instance answered the validation of $n from storage" \
    grep -q "event=challenge_served challenge=http-01 distributed=true identifier=$n" "$WORK/answer.log"
done
spare=${PEBBLE_SPARE_PORTS%% *}
check "distributed: the ordering instance listened where Pebble never asks" \
  grep -q "event=acme_http01_listening.*port=$spare" "$WORK/order.log"
check "distributed: no challenge is left in the shared storage" \
  bash -c "[ -z \"\$(ls -A '$SHARED_DATA/acme/$PEBBLE_ISSUER_KEY/challenge_tokens' 2>/dev/null)\" ]"

# --- with Caddy on the same storage: each answers the other's challenges ----------
if command -v caddy >/dev/null; then
  read -r _ caddy_http caddy_https _ <<<"$PEBBLE_SPARE_PORTS"
  caddy_start() { # HTTP_PORT: Caddy's ACME issuer is Pebble, storage the shared tree
    cat > "$WORK/Caddyfile" <<CADDY
{
	admin off
	storage file_system $SHARED_DATA
	skip_install_trust
	http_port $1
	https_port $caddy_https
	email ops@example.test
	cert_issuer acme {
		dir $PEBBLE_DIR_URL
		trusted_roots $PEBBLE_CA_BUNDLE
		disable_tlsalpn_challenge
	}
	ocsp_stapling off
}
fromcaddy.example.test:$caddy_https {
	respond "hello from caddy"
}
CADDY
    HOME=$WORK XDG_CONFIG_HOME=$WORK XDG_DATA_HOME=$WORK \
      caddy run --config "$WORK/Caddyfile" --adapter caddyfile >>"$WORK/caddy.log" 2>&1 &
    caddy_pid=$!; PIDS+=("$caddy_pid")
  }
  caddy_stop() { kill "$caddy_pid" 2>/dev/null || true; wait "$caddy_pid" 2>/dev/null || true; }

  # Caddy orders, listening where Pebble never asks; certmaint answers from storage
  caddy_start "$caddy_http"
  check "Caddy: obtains fromcaddy.example.test, its challenge answered by certmaint" \
    wait_for 30 test -s "$dstore/fromcaddy.example.test/fromcaddy.example.test.crt"
  check "Caddy: certmaint served that validation from Caddy's stored challenge" \
    grep -q "event=challenge_served challenge=http-01 distributed=true identifier=fromcaddy.example.test" "$WORK/answer.log"
  check "Caddy: its chain verifies against Pebble's root" verified "$dstore" fromcaddy.example.test
  caddy_stop
fi
kill -TERM "$answer_pid"
set +e; wait "$answer_pid"; rc=$?; set -e
check "distributed: the answering daemon stops on SIGTERM (exit $rc)" test "$rc" -eq 0
check "distributed: it obtained nothing itself" bash -c "! grep -q 'event=obtained' '$WORK/answer.log'"

if command -v caddy >/dev/null; then
  # certmaint orders, listening where Pebble never asks; Caddy answers on Pebble's httpPort
  caddy_start "$PEBBLE_HTTP_PORT"
  check "Caddy: listens on Pebble's httpPort" wait_for 10 bash -c "curl -s -o /dev/null http://127.0.0.1:$PEBBLE_HTTP_PORT/"
  set +e; ROLE=order CERTS=tocaddy.example.test "$BIN" once "$POL/acme_distributed.lua" 2>"$WORK/order2.log"; rc=$?; set -e
  check "Caddy: certmaint obtains tocaddy.example.test, Caddy answering its challenge (exit $rc)" test "$rc" -eq 0
  check "Caddy: Caddy served that validation from certmaint's stored challenge" \
    grep -q '"served key authentication","identifier":"tocaddy.example.test","challenge":"http-01".*"distributed":true' "$WORK/caddy.log"
  check "Caddy: its chain verifies against Pebble's root" verified "$dstore" tocaddy.example.test
  caddy_stop
else
  fail "caddy is not installed (scripts/deps.sh installs it)"
fi

# --- renewals by the window rule while the daemons run (webroot and dns-01) ----------
# the certificates above live 30 s: each is due 20 s after it was issued
issued_before=$(pebble_issued)
serial() { openssl x509 -in "$store/$1/$1.crt" -noout -serial; }
declare -A old_serial
for n in web.example.test w1.example.test wildcard_.wild.example.test dns.example.test; do old_serial[$n]=$(serial "$n"); done
export CERTMAINT_RENEW_CHECK=1s
check "renewal: the webroot's web server is back on Pebble's httpPort" www_start
"$BIN" run "$POL/acme_webroot.lua" 2>"$WORK/webroot-run.log" &
web_run=$!; PIDS+=("$web_run")
"$BIN" run "$POL/acme_dns01.lua" 2>"$WORK/dns-run.log" &
dns_run=$!; PIDS+=("$dns_run")
check "renewal: the webroot daemon renews both of its certificates" \
  wait_for 45 bash -c "[ \$(grep -c 'event=renewed' '$WORK/webroot-run.log') -ge 2 ]"
check "renewal: the dns-01 daemon renews both, the wildcard one included" \
  wait_for 45 bash -c "grep -q 'event=renewed.*name=\*.wild.example.test' '$WORK/dns-run.log' && [ \$(grep -c 'event=renewed' '$WORK/dns-run.log') -ge 2 ]"
for p in "$web_run" "$dns_run"; do kill -TERM "$p"; done
set +e; wait "$web_run"; rc1=$?; wait "$dns_run"; rc2=$?; set -e
check "renewal: both daemons stop on SIGTERM (exit $rc1, $rc2)" test "$rc1" -eq 0 -a "$rc2" -eq 0
renewed=$(cat "$WORK/webroot-run.log" "$WORK/dns-run.log" | grep -c 'event=renewed' || true)
check "renewal: Pebble issued one certificate per renewal ($(pebble_issued) = $issued_before + $renewed)" \
  test "$(pebble_issued)" -eq $((issued_before + renewed))
for n in web.example.test w1.example.test wildcard_.wild.example.test dns.example.test; do
  check "renewal: $n holds a new certificate" test "$(serial "$n")" != "${old_serial[$n]}"
  check "renewal: the renewed chain of $n verifies against Pebble's root" verified "$store" "$n"
done
check "renewal: no error in either daemon (badNonce and all handled)" \
  bash -c "! grep -q 'level=error' '$WORK/webroot-run.log' '$WORK/dns-run.log'"
check "renewal: no token file or folder is left in the webroot" test -z "$(ls -A "$WEBROOT")"
www_stop

finish
