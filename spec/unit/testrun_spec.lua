local testrun = require "certmaint.testrun"

local function sh(cmd) assert(os.execute(cmd), cmd) end
local function touch(path)
  sh("mkdir -p '" .. path:match("^(.*)/[^/]*$") .. "'")
  local f = assert(io.open(path, "w"))
  f:write("-- placeholder\n")
  f:close()
end
local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

describe("certmaint test: finding the modules beside the binary", function()
  local root
  before_each(function()
    root = os.tmpname()
    os.remove(root)
    sh("mkdir -p '" .. root .. "'")
  end)
  after_each(function() sh("rm -rf '" .. root .. "'") end)

  it("an installed prefix with a multiarch lib folder (the Debian package, cmake --install to /usr)", function()
    touch(root .. "/bin/certmaint")
    touch(root .. "/share/lua/5.4/certmaint/testing.lua")
    touch(root .. "/lib/x86_64-linux-gnu/lua/5.4/certmaint/core.so")
    local p = assert(testrun.paths(root .. "/bin/certmaint"))
    assert.equal("installed", p.layout)
    assert.same({ root .. "/share/lua/5.4" }, p.lua_dirs)
    assert.equal(root .. "/lib/x86_64-linux-gnu/lua/5.4", p.cmod_dir)
  end)

  it("an installed prefix with a plain lib folder (/usr/local, a LuaRocks tree)", function()
    touch(root .. "/bin/certmaint")
    touch(root .. "/share/lua/5.4/certmaint/testing.lua")
    touch(root .. "/lib/lua/5.4/certmaint/core.so")
    local p = assert(testrun.paths(root .. "/bin/certmaint"))
    assert.equal(root .. "/lib/lua/5.4", p.cmod_dir)
  end)

  it("a build tree: the sources named by CMakeCache.txt, the build's lua/ for core.so", function()
    local src, build = root .. "/src", root .. "/build"
    touch(src .. "/lua/certmaint/testing.lua")
    touch(build .. "/lua/certmaint/core.so")
    local f = assert(io.open(build .. "/CMakeCache.txt", "w"))
    f:write("# This is the CMakeCache file.\nCMAKE_BUILD_TYPE:STRING=RelWithDebInfo\n",
      "certmaint_SOURCE_DIR:STATIC=" .. src .. "\n")
    f:close()
    local p = assert(testrun.paths(build .. "/certmaint"))
    assert.equal("build", p.layout)
    assert.same({ src .. "/lua" }, p.lua_dirs)
    assert.equal(build .. "/lua", p.cmod_dir)
  end)

  it("neither: an error naming where it looked", function()
    touch(root .. "/bin/certmaint")
    touch(root .. "/share/lua/5.4/certmaint/testing.lua") -- the Lua side without the C module
    local p, err = testrun.paths(root .. "/bin/certmaint")
    assert.is_nil(p)
    assert.matches("cannot find the Lua modules of " .. root .. "/bin/certmaint", err, 1, true)
    assert.matches(root .. "/lib[/<arch>]/lua/5.4/certmaint/core.so", err, 1, true)
    assert.matches(root .. "/bin/lua/certmaint/core.so (a build tree)", err, 1, true)
  end)
end)

describe("certmaint test: the paths and the command line", function()
  local p = { lua_dirs = { "/p/share/lua/5.4" }, cmod_dir = "/p/lib/lua/5.4" }

  it("puts certmaint's modules first, then the caller's paths, then Lua's defaults", function()
    local path, cpath = testrun.search_paths(p, function() return nil end)
    assert.equal("/p/share/lua/5.4/?.lua;/p/share/lua/5.4/?/init.lua;;", path)
    assert.equal("/p/lib/lua/5.4/?.so;;", cpath)
    local env = { LUA_PATH = "spec/?.lua", LUA_CPATH = "mine/?.so" }
    path, cpath = testrun.search_paths(p, function(k) return env[k] end)
    assert.equal("/p/share/lua/5.4/?.lua;/p/share/lua/5.4/?/init.lua;spec/?.lua;;", path)
    assert.equal("/p/lib/lua/5.4/?.so;mine/?.so;;", cpath)
    env.LUA_PATH_5_4 = "v54/?.lua" -- what lua5.4 itself would read first
    path = testrun.search_paths(p, function(k) return env[k] end)
    assert.equal("/p/share/lua/5.4/?.lua;/p/share/lua/5.4/?/init.lua;v54/?.lua;;", path)
  end)

  it("hands busted every argument as it was given, with the paths in its environment", function()
    local dir = os.tmpname()
    os.remove(dir)
    sh("mkdir -p '" .. dir .. "'")
    local fake = dir .. "/busted"
    local f = assert(io.open(fake, "w"))
    f:write("#!/bin/sh\n{ printf '%s\\n' \"$LUA_PATH_5_4\" \"$LUA_CPATH_5_4\"; for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done; } >'",
      dir, "/out'\nexit 3\n")
    f:close()
    sh("chmod +x '" .. fake .. "'")
    local cmd = testrun.command(fake, "a/?.lua;;", "b/?.so;;", { "-o", "TAP", "it's here.lua", "$HOME `x`" })
    local ok, how, code = os.execute(cmd)
    assert.is_nil(ok)
    assert.equal("exit", how)
    assert.equal(3, code) -- busted's status comes back
    assert.equal("a/?.lua;;\nb/?.so;;\n[--lua=lua5.4]\n[-o]\n[TAP]\n[it's here.lua]\n[$HOME `x`]\n", read(dir .. "/out"))
    cmd = testrun.command(fake, "a", "b", { "--lua=luajit", "s.lua" })
    os.execute(cmd)
    assert.equal("a\nb\n[--lua=luajit]\n[s.lua]\n", read(dir .. "/out")) -- the caller's --lua wins
    sh("rm -rf '" .. dir .. "'")
  end)

  it("without a SPEC: exit status 2", function()
    assert.equal(2, testrun.main({}))
  end)
end)
