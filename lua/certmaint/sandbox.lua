--- Loading a policy file into its own environment.
--
-- Policies are the operator's own code, trusted like a config file; the
-- environment is there to catch mistakes: a strict global table (a typo'd
-- global raises instead of reading nil), text chunks only, `require` limited to
-- certmaint's public modules, lfs and the operator's own modules next to the
-- policy, and no os.execute / io.popen (they would block the loop: use
-- certmaint.exec).
--
-- certmaint's private modules are refused by name: the C module certmaint.core
-- (whose test levers clock_set, loop_reset, ... would let a policy move the
-- daemon's clock or drop its loop), the engine, the job queue, certmaint.testing
-- and the loaders themselves; `require "certmaint.loop"` gives the scheduler's
-- waiting calls only (certmaint.loop in init.lua), not run/step/reset. The
-- public ones are what `require "certmaint"` offers, and nothing there leads
-- to the core.
--
-- The host is out of the policy's reach: certmaint's modules reach the policy
-- as read-only views (assigning into `require("certmaint")`, or into any
-- table inside it, raises; the engine's own tables are untouched); `string`,
-- `table`, ... are the policy's own copies; getmetatable on a value whose
-- metatable is not the policy's own returns PROTECTED and setmetatable refuses
-- it (the shared string metatable, certmaint's objects); coroutine.yield only
-- leaves a coroutine the policy made (a hook cannot suspend certmaint's task).
-- Loading runs under the same watchdog as the hooks (certmaint.hooks), with
-- LOAD_TIME_LIMIT seconds and the hooks' memory ceiling.
local options = require "certmaint.options"
local core = require "certmaint.core"

local M = {}

-- What a policy may require: these modules, and the families below.
M.PUBLIC = {
  ["certmaint"] = true, ["certmaint.duration"] = true, ["certmaint.renewal"] = true,
  ["certmaint.keys"] = true, ["certmaint.options"] = true, ["certmaint.deploy"] = true,
  ["certmaint.storage"] = true, ["certmaint.issuer"] = true, ["certmaint.notify"] = true,
}
M.PUBLIC_FAMILIES = { "certmaint.storage.", "certmaint.issuer." } -- backends and issuers
M.PRIVATE = { ["certmaint.storage.common"] = true } -- backends' shared code
-- Modules a policy gets a view of instead: certmaint.loop's waiting calls only.
M.VIEWS = { ["certmaint.loop"] = function() return require("certmaint").loop end }

local ALLOWED_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget",
  "rawlen", "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring",
  "type", "xpcall", "_VERSION",
}
local ALLOWED_LIBS = { "string", "table", "math", "utf8" }

-- seconds of running time to load a policy file (CERTMAINT_POLICY_LOAD_TIME)
M.LOAD_TIME_LIMIT = tonumber(os.getenv("CERTMAINT_POLICY_LOAD_TIME") or "") or 10
M.PROTECTED = "certmaint: protected metatable" -- getmetatable of what is not the policy's

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- Other modules a policy may require (whole: lfs; the libraries it has anyway).
M.OTHER_MODULES = { lfs = true, string = true, table = true, math = true, utf8 = true }
local OTHER_MODULES = M.OTHER_MODULES

-- The string library policy code gets: pattern calls bounded in work and
-- under the watchdog (core/lua/lpattern.c); the same table is behind
-- ("x"):find while a policy call runs (core.watch_string_index).
local POLICY_STRING = copy(string)
POLICY_STRING.find, POLICY_STRING.match = core.pattern_find, core.pattern_match
POLICY_STRING.gmatch, POLICY_STRING.gsub = core.pattern_gmatch, core.pattern_gsub
core.watch_string_index(POLICY_STRING)
M.PATTERN_STEPS_MAX = core.PATTERN_STEPS_MAX

-- Read-only views of certmaint's tables, one per table (weak: views go with
-- their tables). Reading gives views of the tables inside; functions are
-- given as they are (a module function called with a view reads through it).
local views = setmetatable({}, { __mode = "k" })

local function readonly(t, name)
  if type(t) ~= "table" then return t end
  local v = views[t]
  if v then return v end
  local mt = {
    __index = function(_, k) return readonly(t[k], name) end,
    __newindex = function(_, k)
      error(name .. " belongs to certmaint: a policy cannot change it (assigning field '" .. tostring(k) .. "')", 2)
    end,
    __pairs = function()
      return function(_, k)
        local nk, nv = next(t, k)
        return nk, readonly(nv, name)
      end, v, nil
    end,
    __len = function() return #t end,
    __call = function(_, ...) return t(...) end,
    __metatable = M.PROTECTED,
  }
  if t == package.loaded["certmaint"] then
    -- certmaint.policy notes the policy file's line (init.lua): ask it from here
    local at = getmetatable(t).policy_at
    mt.__index = function(_, k)
      if k == "policy" then return at(require("certmaint.policy").where(2)) end
      return readonly(t[k], name)
    end
  end
  v = setmetatable({}, mt)
  views[t] = v
  return v
end
M.readonly = readonly

local function public_module(name)
  if M.PRIVATE[name] then return false end
  if M.PUBLIC[name] then return true end
  for _, prefix in ipairs(M.PUBLIC_FAMILIES) do
    if name:sub(1, #prefix) == prefix then return true end
  end
  return false
end

local function unavailable(what)
  if what == "os.execute" or what == "io.popen" then
    return what .. " is not available in a policy: it would block the loop (use certmaint.exec)"
  end
  return what .. " is not available in a policy"
end

local OPTIONS = { getenv = { type = "function" } }

--- Build the environment for the policy at `path`. opts.getenv replaces
-- os.getenv (specs run a shipped policy with the settings they choose).
function M.environment(path, opts)
  opts = options.check(opts, OPTIONS, "sandbox.environment")
  local env = {}
  for _, k in ipairs(ALLOWED_GLOBALS) do env[k] = _G[k] end
  for _, k in ipairs(ALLOWED_LIBS) do env[k] = copy(_G[k]) end
  env.string = copy(POLICY_STRING)
  -- metatables: the policy's own, and nobody else's
  local own_mts = setmetatable({}, { __mode = "k" })
  env.getmetatable = function(v)
    local mt = debug.getmetatable(v)
    if mt == nil then return nil end
    if own_mts[mt] then return getmetatable(v) end
    return M.PROTECTED
  end
  env.setmetatable = function(t, mt)
    if type(t) ~= "table" then error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2) end
    local cur = debug.getmetatable(t)
    if cur ~= nil and not own_mts[cur] then
      error("setmetatable: this table's metatable belongs to certmaint: a policy cannot replace it", 2)
    end
    if type(mt) == "table" then own_mts[mt] = true end
    return setmetatable(t, mt)
  end
  -- coroutines: a yield leaves only a coroutine the policy made
  local own_threads = setmetatable({}, { __mode = "k" })
  local co = copy(coroutine)
  co.create = function(f)
    local th = coroutine.create(f)
    own_threads[th] = true
    return th
  end
  co.wrap = function(f)
    local th = co.create(f)
    return function(...)
      local r = table.pack(coroutine.resume(th, ...))
      if not r[1] then
        coroutine.close(th)
        error(r[2], 0)
      end
      return table.unpack(r, 2, r.n)
    end
  end
  co.yield = function(...)
    if not own_threads[coroutine.running()] then
      error("coroutine.yield: a hook cannot suspend certmaint's task (only a coroutine the policy made; "
        .. "certmaint.loop.yield() lets other tasks run)", 2)
    end
    return coroutine.yield(...)
  end
  env.coroutine = co
  env.os = setmetatable({ time = os.time, date = os.date, clock = os.clock, getenv = opts.getenv or os.getenv },
    { __index = function(_, k) error(unavailable("os." .. tostring(k)), 2) end })
  env.io = setmetatable({ open = io.open, lines = io.lines, write = io.write, stderr = io.stderr, stdout = io.stdout },
    { __index = function(_, k) error(unavailable("io." .. tostring(k)), 2) end })
  local dir = path:match("^(.*)/[^/]*$") or "."
  env.require = function(name)
    if type(name) ~= "string" then error("require: module name must be a string", 2) end
    if OTHER_MODULES[name] then
      if name == "lfs" then return readonly(require(name), "lfs") end
      return env[name]
    end
    if name == "certmaint" or name:sub(1, 10) == "certmaint." then
      if public_module(name) then return readonly(require(name), name) end
      if M.VIEWS[name] then return readonly(M.VIEWS[name](), name) end
      error("require: module '" .. name .. "' is private to certmaint and not available in a policy "
        .. "(use require \"certmaint\": certmaint.policy, .storage, .issuer, .deploy, .exec, .log, ...)", 2)
    end
    -- the operator's own helper modules, next to the policy file
    local file = dir .. "/" .. name:gsub("%.", "/") .. ".lua"
    local fn, err = loadfile(file, "t", env)
    if not fn then error("require: module '" .. name .. "' is not allowed in a policy and " ..
      file .. " cannot be loaded: " .. tostring(err), 2) end
    return fn(name)
  end
  env.load = function(chunk, name, mode, e)
    if mode and mode ~= "t" then error("load: only text chunks are allowed in a policy", 2) end
    return load(chunk, name, "t", e or env)
  end
  env._G = env
  return setmetatable(env, {
    __index = function(_, k)
      error("policy reads undefined global '" .. tostring(k) .. "'", 2)
    end,
    __newindex = function(_, k)
      error("policy assigns global '" .. tostring(k) .. "' (declare it local)", 2)
    end,
  })
end

--- Load and run the policy file under the watchdog; returns the validated
-- policy or nil, err. The error names the file and line (syntax errors,
-- runtime errors, fields), or the limit the file's top level ran into.
-- This is how the daemon, `check` and certmaint.testing load a policy.
-- opts: getenv (see M.environment); seconds (running time, default
-- LOAD_TIME_LIMIT), memory_max (bytes the load may add to the heap, default
-- certmaint.hooks.HOOK_MEMORY_MAX).
local LOAD_OPTIONS = { getenv = { type = "function" }, seconds = { type = "number" }, memory_max = { type = "number" } }

function M.load_policy(path, opts)
  opts = options.check(opts, LOAD_OPTIONS, "sandbox.load_policy")
  local hooks = require "certmaint.hooks"
  local f, oerr = io.open(path, "r")
  if not f then return nil, "cannot open policy " .. tostring(oerr) end
  local src, rerr, errno = f:read("a")
  f:close()
  if not src then -- io.open succeeds on a directory; reading it fails
    if errno == 21 then return nil, "cannot read policy " .. path .. ": is a directory, not a policy file" end
    return nil, "cannot read policy " .. path .. ": " .. tostring(rerr)
  end
  local env = M.environment(path, { getenv = opts.getenv })
  local chunk, err = load(src, "@" .. path, "t", env)
  if not chunk then return nil, err end
  -- `return certmaint.policy {...}` drops the file's frame (a tail call), but
  -- certmaint.policy notes its file:line before the call (see init.lua)
  local runner = hooks.new(nil, { memory_max = opts.memory_max })
  local ceiling, why = runner:ceiling()
  if not ceiling then return nil, path .. ": cannot load the policy: " .. why end
  local ok, res, code = core.watch_call({ seconds = opts.seconds or M.LOAD_TIME_LIMIT,
    instructions = hooks.EVENT_INSTRUCTION_LIMIT, ceiling = ceiling }, chunk)
  if not ok then
    local msg = tostring(res):match("^[^\n]*")
    if code == "memory" then
      return nil, path .. ": loading the policy ran out of memory (it may add " .. (runner.memory_max >> 20)
        .. " MiB to the heap)"
    elseif code ~= "error" then
      return nil, path .. ": loading the policy " .. msg
    end
    return nil, msg
  end
  if not require("certmaint.policy").is_policy(res) then
    return nil, path .. ": the policy file must return certmaint.policy { ... } (it returned " .. type(res) .. ")"
  end
  return res
end

return M
