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
local options = require "certmaint.options"

local M = {}

-- What a policy may require: these modules, and the families below.
M.PUBLIC = {
  ["certmaint"] = true, ["certmaint.duration"] = true, ["certmaint.renewal"] = true,
  ["certmaint.keys"] = true, ["certmaint.options"] = true, ["certmaint.deploy"] = true,
  ["certmaint.storage"] = true, ["certmaint.issuer"] = true,
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
local ALLOWED_LIBS = { "string", "table", "math", "utf8", "coroutine" }

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

local OTHER_MODULES = { lfs = true, string = true, table = true, math = true, utf8 = true }

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
  env.os = setmetatable({ time = os.time, date = os.date, clock = os.clock, getenv = opts.getenv or os.getenv },
    { __index = function(_, k) error(unavailable("os." .. tostring(k)), 2) end })
  env.io = setmetatable({ open = io.open, lines = io.lines, write = io.write, stderr = io.stderr, stdout = io.stdout },
    { __index = function(_, k) error(unavailable("io." .. tostring(k)), 2) end })
  local dir = path:match("^(.*)/[^/]*$") or "."
  env.require = function(name)
    if type(name) ~= "string" then error("require: module name must be a string", 2) end
    if OTHER_MODULES[name] then return require(name) end
    if name == "certmaint" or name:sub(1, 10) == "certmaint." then
      if public_module(name) then return require(name) end
      if M.VIEWS[name] then return M.VIEWS[name]() end
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

--- Load and run the policy file; returns the validated policy or nil, err.
-- The error names the file and line (syntax errors, runtime errors, fields).
-- opts: see M.environment.
function M.load_policy(path, opts)
  opts = options.check(opts, OPTIONS, "sandbox.load_policy")
  local f, oerr = io.open(path, "r")
  if not f then return nil, "cannot open policy " .. tostring(oerr) end
  local src = f:read("a")
  f:close()
  local env = M.environment(path, opts)
  local chunk, err = load(src, "@" .. path, "t", env)
  if not chunk then return nil, err end
  -- `return certmaint.policy {...}` drops the file's frame (a tail call), but
  -- certmaint.policy notes its file:line before the call (see init.lua)
  local ok, res = pcall(chunk)
  if not ok then return nil, tostring(res) end
  if not require("certmaint.policy").is_policy(res) then
    return nil, path .. ": the policy file must return certmaint.policy { ... } (it returned " .. type(res) .. ")"
  end
  return res
end

return M
