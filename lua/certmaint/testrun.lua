--- certmaint test SPEC...: busted on a policy author's specs, with package
-- paths pointing at the modules of the certmaint that runs it.
--
-- The binary embeds its Lua side, but busted runs a stock lua5.4, which must
-- find `certmaint`, `certmaint.testing` and the C module `certmaint.core` on
-- disk. Where they are follows from where the binary is:
--   installed:  PREFIX/bin/certmaint, PREFIX/share/lua/5.4/certmaint/*.lua,
--               PREFIX/lib[/<multiarch>]/lua/5.4/certmaint/core.so
--               (cmake --install, the Debian package, a LuaRocks tree)
--   build tree: BUILD/certmaint, BUILD/lua/certmaint/core.so, and the sources'
--               lua/ named by BUILD/CMakeCache.txt (certmaint_SOURCE_DIR)
local lfs = require "lfs"

local M = {}

local function is_file(path) return lfs.attributes(path, "mode") == "file" end
local function is_dir(path) return lfs.attributes(path, "mode") == "directory" end
local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

-- The running executable's path: /proc/self/exe (argv[0] may be a bare name
-- found on PATH, or a symbolic link into the prefix).
function M.self_exe()
  local target = lfs.symlinkattributes("/proc/self/exe", "target")
  if type(target) == "string" and target:sub(1, 1) == "/" then return target end
  return nil, "cannot read /proc/self/exe"
end

-- PREFIX/lib/lua/5.4 or PREFIX/lib/<multiarch>/lua/5.4 holding certmaint/core.so.
local function installed_cmoddir(prefix)
  local plain = prefix .. "/lib/lua/5.4"
  if is_file(plain .. "/certmaint/core.so") then return plain end
  if not is_dir(prefix .. "/lib") then return nil end
  local found = {}
  for entry in lfs.dir(prefix .. "/lib") do
    local dir = prefix .. "/lib/" .. entry .. "/lua/5.4"
    if entry ~= "." and entry ~= ".." and is_file(dir .. "/certmaint/core.so") then found[#found + 1] = dir end
  end
  table.sort(found) -- one per architecture normally; a stable choice otherwise
  return found[1]
end

-- certmaint_SOURCE_DIR from a CMake build directory's cache, or nil.
local function source_dir_of(build)
  local f = io.open(build .. "/CMakeCache.txt", "r")
  if not f then return nil end
  local src
  for line in f:lines() do
    src = line:match("^certmaint_SOURCE_DIR:[%w_]+=(.+)$")
    if src then break end
  end
  f:close()
  return src
end

--- paths(exe) -> { layout = "installed" | "build", lua_dirs = {...}, cmod_dir = dir } | nil, err
-- Where the modules of the certmaint at `exe` are (see the top of this file).
function M.paths(exe)
  local bindir = dirname(exe)
  local prefix = dirname(bindir)
  local luadir = prefix .. "/share/lua/5.4"
  local looked = {}
  if is_file(luadir .. "/certmaint/testing.lua") then
    local cmod = installed_cmoddir(prefix)
    if cmod then return { layout = "installed", lua_dirs = { luadir }, cmod_dir = cmod } end
    looked[#looked + 1] = prefix .. "/lib[/<arch>]/lua/5.4/certmaint/core.so"
  else
    looked[#looked + 1] = luadir .. "/certmaint/testing.lua"
  end
  if is_file(bindir .. "/lua/certmaint/core.so") then
    local src = source_dir_of(bindir)
    if src and is_file(src .. "/lua/certmaint/testing.lua") then
      return { layout = "build", lua_dirs = { src .. "/lua" }, cmod_dir = bindir .. "/lua" }
    end
    looked[#looked + 1] = bindir .. "/CMakeCache.txt naming a source tree with lua/certmaint/testing.lua"
  else
    looked[#looked + 1] = bindir .. "/lua/certmaint/core.so (a build tree)"
  end
  return nil, "cannot find the Lua modules of " .. exe .. ": looked for " .. table.concat(looked, ", ")
end

--- search_paths(p, getenv) -> lua_path, lua_cpath
-- Ours first, then what the caller had (LUA_PATH_5_4 or LUA_PATH), then
-- Lua's defaults (";;"), so a spec's own helpers are still found.
function M.search_paths(p, getenv)
  local path = {}
  for _, d in ipairs(p.lua_dirs) do
    path[#path + 1] = d .. "/?.lua"
    path[#path + 1] = d .. "/?/init.lua"
  end
  local cpath = { p.cmod_dir .. "/?.so" }
  local user_path = getenv("LUA_PATH_5_4") or getenv("LUA_PATH")
  local user_cpath = getenv("LUA_CPATH_5_4") or getenv("LUA_CPATH")
  if user_path and user_path ~= "" then path[#path + 1] = user_path end
  if user_cpath and user_cpath ~= "" then cpath[#cpath + 1] = user_cpath end
  return table.concat(path, ";") .. ";;", table.concat(cpath, ";") .. ";;"
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- command(busted, lua_path, lua_cpath, args) -> a /bin/sh command line
-- LUA_PATH_5_4 and LUA_CPATH_5_4 win over the unversioned names in lua5.4.
function M.command(busted, lua_path, lua_cpath, args)
  local words = { "env", shell_quote("LUA_PATH_5_4=" .. lua_path), shell_quote("LUA_CPATH_5_4=" .. lua_cpath),
    shell_quote(busted) }
  local has_lua = false
  for _, a in ipairs(args) do
    if a == "--lua" or a:match("^%-%-lua=") then has_lua = true end
  end
  if not has_lua then words[#words + 1] = "--lua=lua5.4" end
  for _, a in ipairs(args) do words[#words + 1] = shell_quote(a) end
  return table.concat(words, " ")
end

--- main(args) -> exit status: busted's, 1 when the modules or busted cannot
-- be found, 2 without a SPEC.
function M.main(args)
  if #args == 0 then
    io.stderr:write("certmaint: test: give one or more SPEC files or folders (busted's options before them)\n")
    return 2
  end
  local exe, err = M.self_exe()
  local p
  if exe then p, err = M.paths(exe) end
  if not p then
    io.stderr:write("certmaint: test: ", err, "\n")
    return 1
  end
  local busted = os.getenv("CERTMAINT_BUSTED") or "busted"
  local lua_path, lua_cpath = M.search_paths(p, os.getenv)
  local ok, how, code = os.execute(M.command(busted, lua_path, lua_cpath, args))
  if how == "signal" then return 128 + code end
  if code == 127 then
    io.stderr:write("certmaint: test: cannot run ", busted, " (install busted: apt-get install lua-busted;",
      " or set CERTMAINT_BUSTED)\n")
    return 1
  end
  return ok and 0 or code
end

return M
