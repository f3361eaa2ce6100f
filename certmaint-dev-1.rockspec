-- LuaRocks: the Lua side of certmaint (certmaint.*, certmaint.testing) and its
-- C module certmaint.core, for Lua developers and policy authors' specs:
--   luarocks --lua-version=5.4 make             (in this tree; --local or --tree DIR)
-- The CMake build does the work (README "Install"); the rock also gets the
-- certmaint binary (its bin/certmaint runs `certmaint test` against the rock's
-- modules). Needs the C libraries' headers: on Debian, apt-get install cmake
-- pkg-config liblua5.4-dev libssl-dev libcurl4-openssl-dev libjansson-dev libidn2-dev.
rockspec_format = "3.0"
package = "certmaint"
version = "dev-1"
source = {
  -- `luarocks make` builds the tree it runs in and fetches nothing; no
  -- public repository is published yet for `luarocks install` to fetch
  url = "git+file://./certmaint",
}
description = {
  summary = "Keeps TLS certificates alive: ACME, renewals, OCSP staples, clean-up, policies in Lua",
  detailed = [[
certmaint obtains certificates, renews them before they expire, keeps OCSP
staples fresh, cleans dead files out of storage and lets several instances
share one storage without issuing twice. What it decides is a Lua policy; this
rock installs the modules a policy and its busted specs use
(require "certmaint", require "certmaint.testing") and the C core.]],
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "luafilesystem >= 1.8",
}
test_dependencies = { "busted" }
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    CMAKE_INSTALL_BINDIR = "$(BINDIR)",
    CERTMAINT_INSTALL_LUADIR = "$(LUADIR)",
    CERTMAINT_INSTALL_CMODDIR = "$(LIBDIR)",
    CERTMAINT_BUILD_TESTS = "OFF",          -- no busted needed to build
    CERTMAINT_INSTALL_SYSTEM_FILES = "OFF", -- a rock tree is no place for systemd units
    CERTMAINT_WERROR = "OFF",               -- other compilers warn differently
  },
}
