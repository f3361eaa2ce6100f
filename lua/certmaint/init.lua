--- certmaint: the Lua side every policy uses.
--
--   local certmaint = require "certmaint"
--   return certmaint.policy { certificates = { "example.com" } }
--
-- Fields load lazily so `require "certmaint"` stays cheap and a spec that only
-- needs durations does not pull in storage or the loop.
--
-- This table is what a policy sees, so it offers only the public modules: the
-- C module certmaint.core (with its test levers: clock_set, loop_reset, ...),
-- the scheduler's controls and certmaint.testing are for certmaint's own
-- modules and for specs, which `require` them by name (certmaint.sandbox
-- refuses them to a policy).
local M = {}

--- certmaint.loop as a policy sees it: the calls that wait inside a loop task,
-- for hooks and issuers written in the policy (a slow issuer sleeps, a deploy
-- hook runs a command). What drives the daemon (run, step, stop, spawn, reset)
-- is not here. Each call goes to the scheduler at call time.
M.loop = {}
for _, name in ipairs { "sleep", "yield", "exec", "http", "in_task" } do
  M.loop[name] = function(...) return require("certmaint.loop")[name](...) end
end

local lazy = {
  duration = "certmaint.duration",
  renewal = "certmaint.renewal",
  keys = "certmaint.keys",
  storage = "certmaint.storage",
  issuer = "certmaint.issuer",
  deploy = "certmaint.deploy",
  notify = "certmaint.notify",
}

--- Run a command without blocking the loop (deploy hooks: reload nginx, ...).
-- Returns {status=, signal=, stdout=, stderr=} or nil, err, code.
function M.exec(argv, opts)
  return require("certmaint.loop").exec(argv, opts)
end

--- Log one event: certmaint.log("info", "deployed", {name = "example.com"}).
function M.log(level, event, fields)
  return require("certmaint.core").log(level, event, fields)
end

--- Write a file atomically, for a policy's metrics or state files: a temp
-- file beside `path`, written in full, fsync, rename over `path`, fsync of
-- the folder (core.write_atomic), so a reader sees the old file or the new
-- one, never half of one, even across a crash. The policy sandbox has no
-- os.rename/os.remove; this is the write it needs. Small files only: the
-- fsync waits for the disk.
-- opts.mode: octal string, default "0600" (pass "0644" for a file other
-- programs read). Returns true | nil, err, code ("ENOENT" when the folder
-- does not exist, "EACCES", "EISDIR", ...).
local WRITE_FILE_OPTIONS = {
  mode = { type = "string", default = "0600",
    check = function(v) return v:match("^0?[0-7][0-7][0-7]$") ~= nil, "must be an octal string like \"0644\"" end },
}

function M.write_file(path, data, opts)
  if type(path) ~= "string" or path == "" then
    error("certmaint.write_file: path must be a non-empty string, not " .. (path == "" and "\"\"" or type(path)), 2)
  end
  if type(data) ~= "string" then error("certmaint.write_file: data must be a string, not " .. type(data), 2) end
  local o = require("certmaint.options").check(opts, WRITE_FILE_OPTIONS, "certmaint.write_file", 2)
  local st = require("certmaint.core").stat(path)
  if st and st.type == "directory" then
    return nil, "certmaint.write_file: " .. path .. ": is a directory", "EISDIR"
  end
  local ok, err, code = require("certmaint.core").write_atomic(path, data, o.mode)
  if not ok then return nil, "certmaint.write_file: " .. tostring(err), code end
  return true
end

-- certmaint.policy(spec): validate a policy table and apply defaults (see
-- certmaint.policy). Errors and P.source name the file:line where
-- `certmaint.policy` is written, even in `return certmaint.policy { ... }`:
-- a tail call drops the file's frame before any callee runs, but reading the
-- field happens first, while the frame is live, so it is served from __index,
-- which notes the place. Called as a statement, the call's own line is used
-- (the same line, or the right one when the function was kept in a local).
local function policy_at(at)
  return function(spec)
    local P = require "certmaint.policy"
    local source = at
    if not debug.getinfo(1, "t").istailcall then source = P.where(2) end
    return P.validate(spec, source)
  end
end

return setmetatable(M, {
  policy_at = policy_at, -- for certmaint.sandbox's read-only view of this table
  __index = function(t, k)
    if k == "policy" then
      return policy_at(require("certmaint.policy").where(2)) -- not cached: each use has its own place
    end
    local mod = lazy[k]
    if not mod then return nil end
    local v = require(mod)
    rawset(t, k, v)
    return v
  end,
})
