#!/usr/bin/env bash
# certmaint-dev-1.rockspec: `luarocks make` into a fresh tree (the cmake
# backend, in a copy of the sources), then a Lua developer's lua5.4 finds the
# modules through `luarocks path`, and the rock's certmaint runs a spec.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/packaging.bash"
T=$WORK/tree
copy_source_tree "$WORK/src"

# lfs comes from Debian's lua-filesystem, which LuaRocks does not see as a rock
set +e
(cd "$WORK/src" && CMAKE_BUILD_PARALLEL_LEVEL=2 luarocks --lua-version=5.4 --tree "$T" make --deps-mode=none \
  certmaint-dev-1.rockspec) >"$WORK/make.log" 2>&1
rc=$?
set -e
check "luarocks make builds and installs the rock" test $rc -eq 0
[ $rc -eq 0 ] || tail -30 "$WORK/make.log"
check "luarocks lists certmaint dev-1 in the tree" \
  bash -c "luarocks --lua-version=5.4 --tree '$T' list --porcelain | grep -q '^certmaint	dev-1	installed'"
check "the modules in the tree's share/lua/5.4 and lib/lua/5.4" \
  test -f "$T/share/lua/5.4/certmaint/testing.lua" -a -f "$T/lib/lua/5.4/certmaint/core.so"
check "no systemd files in a rock tree" bash -c "! find '$T' -name certmaint.service | grep -q ."

# a Lua developer: the paths luarocks prints, nothing else
paths=$(luarocks --lua-version=5.4 --tree "$T" path)
cat >"$WORK/probe.lua" <<'LUA'
local core = require "certmaint.core"
local testing = require "certmaint.testing"
print(package.searchpath("certmaint.core", package.cpath))
print(package.searchpath("certmaint.testing", package.path))
print(type(testing.clock), core.version)
LUA
out=$(cd "$WORK" && env -i PATH=/usr/bin:/bin bash -c "$paths
lua5.4 probe.lua" 2>&1) || true
version=$("$T/bin/certmaint" --version | cut -d' ' -f2)
expected="$T/lib/lua/5.4/certmaint/core.so
$T/share/lua/5.4/certmaint/testing.lua
function	$version"
check "lua5.4 with luarocks path requires certmaint.core and certmaint.testing from the tree" \
  test "$out" = "$expected"
[ "$out" = "$expected" ] || echo "$out"

mkdir -p "$WORK/specs"
cat >"$WORK/specs/rock_spec.lua" <<LUA
local testing = require "certmaint.testing"
describe("the rock", function()
  after_each(testing.reset)
  it("runs a policy on the fake clock", function()
    testing.capture_logs()
    local clock = testing.clock(testing.EPOCH)
    local e = testing.engine(require("certmaint").policy { certificates = { "a.test" } },
      { clock = clock, storage = testing.memory() })
    assert.is_truthy(e:cert("a.test"))
    assert.equal("@$T/share/lua/5.4/certmaint/testing.lua", debug.getinfo(testing.clock, "S").source)
  end)
end)
LUA
set +e
(cd "$WORK" && env -i "PATH=$T/bin:/usr/bin:/bin" "HOME=$WORK" certmaint test specs/rock_spec.lua) >"$WORK/spec.out" 2>&1
rc=$?
set -e
check "the rock's bin/certmaint test runs a spec against the rock's modules" test $rc -eq 0
[ $rc -eq 0 ] || cat "$WORK/spec.out"
finish
