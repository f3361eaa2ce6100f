#!/usr/bin/env bash
# `cmake --install` into a fresh prefix, then use only what it laid out: the
# layout, the man pages, `certmaint --version`, a policy author's busted spec
# through `certmaint test` with no LUA_PATH set, and `certmaint once` with a
# shipped policy (the internal CA) into a temp storage root.
source "$(dirname "$0")/lib.bash"
BUILD=${CERTMAINT_BUILD_DIR:?}
P=$WORK/prefix

cmake --install "$BUILD" --prefix "$P" >"$WORK/install.log" 2>&1
check "cmake --install into $P" test -x "$P/bin/certmaint"

# --- the layout -----------------------------------------------------------
cmod=
for f in "$P"/lib/lua/5.4/certmaint/core.so "$P"/lib/*/lua/5.4/certmaint/core.so; do
  if [ -f "$f" ]; then cmod=$f; break; fi
done
check "the C module in lib[/<arch>]/lua/5.4/certmaint/core.so" test -n "$cmod"
check "the Lua side in share/lua/5.4/certmaint/" \
  test -f "$P/share/lua/5.4/certmaint/init.lua" -a -f "$P/share/lua/5.4/certmaint/testing.lua"
check "the installed Lua files are the sources, bench/ left out" \
  diff -r -x bench "$SRC/lua/certmaint" "$P/share/lua/5.4/certmaint"
check "no certmaint-bench, no bench modules (developer tools)" \
  test ! -e "$P/bin/certmaint-bench" -a ! -e "$P/share/lua/5.4/certmaint/bench"
check "every shipped policy in share/certmaint/policies" \
  diff -r "$SRC/policies" "$P/share/certmaint/policies"
check "man pages in share/man/man1 and man5" \
  test -f "$P/share/man/man1/certmaint.1" -a -f "$P/share/man/man5/certmaint-policy.5"
check "the systemd unit, sysusers.d and tmpfiles.d files" \
  test -f "$P/lib/systemd/system/certmaint.service" -a -f "$P/lib/sysusers.d/certmaint.conf" \
  -a -f "$P/lib/tmpfiles.d/certmaint.conf"
unit=$P/lib/systemd/system/certmaint.service
check "the unit: Type=notify, runs /etc's policy as user certmaint, hardened" bash -c "
  grep -qx 'Type=notify' '$unit' && grep -qx 'User=certmaint' '$unit' && grep -qx 'StateDirectory=certmaint' '$unit' &&
  grep -qx 'ProtectSystem=strict' '$unit' && grep -qx 'NoNewPrivileges=yes' '$unit' && grep -qx 'PrivateTmp=yes' '$unit' &&
  grep -q '^WatchdogSec=' '$unit' && grep -q '^ReadWritePaths=' '$unit' &&
  grep -Eqx 'ExecStart=/[^ ]*/bin/certmaint run /[^ ]*etc/certmaint/policy.lua' '$unit' &&
  ! grep -q '@[A-Z_]*@' '$unit'"

# the man pages render without a warning from groff
for page in man1/certmaint.1 man5/certmaint-policy.5; do
  MANWIDTH=80 man --warnings -l "$P/share/man/$page" >"$WORK/man.txt" 2>"$WORK/man.err" || true
  check "man -l $page renders, no warnings" bash -c "[ -s '$WORK/man.txt' ] && [ ! -s '$WORK/man.err' ]"
done
MANWIDTH=80 man -l "$P/share/man/man1/certmaint.1" >"$WORK/man1.txt" 2>/dev/null || true
check "certmaint(1) renders the test command's entry" grep -q '^ *test \[BUSTED-OPTION...\] SPEC...' "$WORK/man1.txt"

# --- run from the prefix, nothing set by hand --------------------------------
# env -i: no LUA_PATH, LUA_CPATH (nor their _5_4 forms); PATH has the prefix's
# bin first and the system's for busted and lua5.4. Under the sanitizer build
# the stock lua5.4 that busted runs needs the runtimes preloaded (lib.bash).
clean_env=(env -i "PATH=$P/bin:/usr/bin:/bin" "HOME=$WORK" "TMPDIR=$WORK")
for v in ASAN_OPTIONS UBSAN_OPTIONS; do
  if [ -n "${!v:-}" ]; then clean_env+=("$v=${!v}"); fi
done
spec_env=("${clean_env[@]}")
if [ -n "${CERTMAINT_HOST_PRELOAD:-}" ]; then
  spec_env+=("LD_PRELOAD=$CERTMAINT_HOST_PRELOAD" "ASAN_OPTIONS=detect_leaks=0")
fi
cd "$WORK" # away from the source tree: ./lua must not be what is found

"${clean_env[@]}" certmaint --version >"$WORK/version" 2>&1 || true
check "certmaint --version from the prefix's bin" grep -qx 'certmaint [0-9][0-9.]*' "$WORK/version"

mkdir -p "$WORK/myspecs"
cat >"$WORK/myspecs/my_policy_spec.lua" <<EOF
-- what a policy author writes: the shipped local policy, a fake clock, in memory
local certmaint = require "certmaint"
local testing = require "certmaint.testing"

describe("my policy", function()
  after_each(testing.reset)

  it("finds certmaint, certmaint.testing and the C core in the prefix", function()
    assert.is_function(certmaint.policy)
    local src = debug.getinfo(testing.clock, "S").source
    assert.equal("@$P/share/lua/5.4/certmaint/testing.lua", src)
    assert.equal("$cmod", package.searchpath("certmaint.core", package.cpath))
  end)

  it("obtains at once and renews in the last third", function()
    local logs = testing.capture_logs()
    local clock = testing.clock(testing.EPOCH)
    local policy = assert(testing.load_policy("$P/share/certmaint/policies/local.lua"))
    local issuer = testing.issuer { lifetime = "30d" }
    local e = testing.engine(policy, { clock = clock, issuer = issuer, storage = testing.memory() })
    assert.equal(4, issuer.issued)
    clock:advance("19d"); e:tick("renew")
    assert.equal(4, issuer.issued)
    clock:advance("2d"); e:tick("renew")
    assert.equal(8, issuer.issued)
    assert.matches("event=local_renewed how=renewed name=localhost", table.concat(logs(), "\n"), 1, true)
  end)
end)
EOF
set +e
"${spec_env[@]}" certmaint test -o TAP myspecs/my_policy_spec.lua >"$WORK/spec.out" 2>&1; rc=$?
set -e
check "certmaint test runs the spec against the installed tree: exit 0" test $rc -eq 0
check "... both tests passed" bash -c "grep -c '^ok ' '$WORK/spec.out' | grep -qx 2 && ! grep -q '^not ok' '$WORK/spec.out'"
[ $rc -eq 0 ] || cat "$WORK/spec.out"

cat >"$WORK/myspecs/failing_spec.lua" <<'EOF'
local testing = require "certmaint.testing"
describe("a policy that renews too late", function()
  it("is caught", function() assert.equal(1, testing.issuer {}.issued) end)
end)
EOF
set +e
"${spec_env[@]}" certmaint test myspecs/failing_spec.lua >"$WORK/fail.out" 2>&1; rc=$?
set -e
check "a failing spec fails certmaint test (busted's exit status)" test $rc -ne 0
check "... and it failed on the assertion, not on a missing module" \
  bash -c "grep -q '1 failure' '$WORK/fail.out' && ! grep -q \"module 'certmaint\" '$WORK/fail.out'"

# certmaint once with the shipped internal-CA policy, into a temp storage root
store=$WORK/store
mkdir -m 0700 "$store"
set +e
"${clean_env[@]}" CERTMAINT_DATA="$store" certmaint once "$P/share/certmaint/policies/local.lua" \
  >"$WORK/once.out" 2>"$WORK/once.err"; rc=$?
set -e
check "once with the installed local.lua: exit 0, four certificates obtained" \
  bash -c "[ $rc -eq 0 ] && grep -q '^loaded 0, obtained 4,' '$WORK/once.out'"
check "... no error in its log" bash -c "! grep -q 'level=error' '$WORK/once.err'"
crt=$store/certificates/local/localhost/localhost.crt
check "... the certificate chains to the local root it made" \
  openssl verify -CAfile "$store/pki/authorities/local/root.crt" -untrusted "$crt" "$crt"
check "... its key is 0600" test "$(stat -c %a "$store/certificates/local/localhost/localhost.key")" = 600

finish
