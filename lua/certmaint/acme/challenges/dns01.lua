--- certmaint.acme.challenges.dns01: dns-01 through the policy's own hooks,
-- which talk to the DNS provider (an HTTP API through certmaint.loop.http, a
-- command through certmaint.exec). The only challenge for wildcard names.
--
--   challenges = { dns01 = {
--     present = function(name, value, info) ... end,   -- add TXT <name> = <value>
--     cleanup = function(name, value, info) ... end,   -- remove that value
--     propagation = "10s",                             -- wait this long after present
--     propagation_check = function(name, value, info) return seen end, -- optional
--     propagation_timeout = "2m", propagation_interval = "2s",
--   } }
--
-- name is the record's full name without the final dot,
-- "_acme-challenge.<identifier>" (for "*.example.com": "_acme-challenge.example.com");
-- value is the TXT value (base64url SHA-256 of the key authorization); info =
-- { identifier =, wildcard =, token =, url = } (a copy). A name and its
-- wildcard ("example.com", "*.example.com") put two values on one record at
-- once: present adds one, cleanup must remove only its own.
--
-- The hooks are policy event hooks: they run through certmaint.hooks (the
-- engine's runner when ctx.hooks is given, so failures count in `status` and
-- reach on_error), with the event hooks' running-time, instruction and memory
-- limits; waiting in the loop (HTTP, exec, sleep) does not count as running.
-- A hook fails when it raises, or returns false or nil, err; the solver then
-- returns nil, 'dns-01 challenge for "*.example.com": present(_acme-challenge.example.com) failed: <why>',
-- code ("hook_failed", or the runner's "timeout" / "instructions" / "memory" / "disabled").
-- wait(): sleeps `propagation` seconds, then, with propagation_check, asks it
-- every propagation_interval until it returns true, for propagation_timeout at most.
local core = require "certmaint.core"
local hooks = require "certmaint.hooks"
local loop = require "certmaint.loop"
local options = require "certmaint.options"

local M = {}

M.TYPE = "dns-01"
M.SCHEMA = {
  present = { type = "function", required = true },
  cleanup = { type = "function", required = true },
  propagation = { type = "duration", default = 0 },
  propagation_check = { type = "function" },
  propagation_timeout = { type = "duration", default = 120,
    check = function(v) return v > 0, "must be more than 0 seconds" end },
  propagation_interval = { type = "duration", default = 2,
    check = function(v) return v > 0, "must be more than 0 seconds" end },
}

M.RECORD_PREFIX = "_acme-challenge."

local Solver = {}
Solver.__index = Solver

--- new(opts, ctx): ctx = { hooks = runner (optional: certmaint.hooks.new(policy)), log = fn }.
function M.new(opts, ctx)
  local o = options.check(opts, M.SCHEMA, "certmaint.acme.challenges.dns01", 2)
  ctx = ctx or {}
  return setmetatable({ opts = o, ctx = ctx, runner = ctx.hooks or hooks.new(nil) }, Solver)
end

--- The TXT record's name for an identifier (no final dot).
function M.record_name(identifier)
  return M.RECORD_PREFIX .. identifier:gsub("^%*%.", ""):gsub("%.$", "")
end

local function shown(chal)
  return chal.wildcard and ("*." .. chal.identifier) or chal.identifier
end

local function value_of(chal)
  if type(chal.dns_value) == "string" and chal.dns_value ~= "" then return chal.dns_value end
  if core.digest and type(chal.key_authorization) == "string" then
    return core.digest("sha256", chal.key_authorization, "base64url")
  end
  error("dns01: chal.dns_value (base64url SHA-256 of the key authorization) is missing", 3)
end

local function check_chal(chal)
  if type(chal) ~= "table" or type(chal.identifier) ~= "string" or chal.identifier == "" then
    error("dns01: chal.identifier must be a non-empty string", 3)
  end
end

-- Run hook `which` watched; true, result | nil, err, code. A question
-- (propagation_check) fails only by raising: false is its answer.
function Solver:run(which, fn, chal, name, value, question)
  local info = { identifier = chal.identifier, wildcard = chal.wildcard == true, token = chal.token,
    url = chal.url }
  local r = table.pack(self.runner:notify("dns01." .. which, fn, name, value, info))
  local why, code
  if not r[1] then
    why, code = r[2], r[3] or "hook_failed"
    if code ~= "timeout" and code ~= "instructions" and code ~= "memory" and code ~= "disabled" then
      code = "hook_failed"
    end
  elseif not question and (r[2] == false or (r[2] == nil and r.n >= 3 and r[3] ~= nil)) then
    why, code = r[3] ~= nil and tostring(r[3]) or "it returned false", "hook_failed"
  else
    return true, r[2]
  end
  return nil, string.format("dns-01 challenge for %q: %s(%s) failed: %s", shown(chal), which, name,
    tostring(why)), code
end

function Solver:present(chal)
  check_chal(chal)
  local name, value = M.record_name(chal.identifier), value_of(chal)
  local ok, err, code = self:run("present", self.opts.present, chal, name, value)
  if not ok then return nil, err, code end
  local log = self.ctx.log or core.log
  log("debug", "challenge_presented", { challenge = "dns-01", identifier = shown(chal), record = name })
  return true
end

function Solver:cleanup(chal)
  check_chal(chal)
  local ok, err, code = self:run("cleanup", self.opts.cleanup, chal, M.record_name(chal.identifier), value_of(chal))
  if not ok then return nil, err, code end
  return true
end

function Solver:wait(chal)
  check_chal(chal)
  local o = self.opts
  if o.propagation > 0 then loop.sleep(o.propagation) end
  if not o.propagation_check then return true end
  local name, value = M.record_name(chal.identifier), value_of(chal)
  local deadline = core.now() + o.propagation_timeout
  while true do
    local ok, seen_or_err, code = self:run("propagation_check", o.propagation_check, chal, name, value, true)
    if not ok then return nil, seen_or_err, code end
    if seen_or_err then return true end
    if core.now() + o.propagation_interval > deadline then
      return nil, string.format("dns-01 challenge for %q: TXT %s not seen by propagation_check within %gs",
        shown(chal), name, o.propagation_timeout), "timeout"
    end
    loop.sleep(o.propagation_interval)
  end
end

return M
