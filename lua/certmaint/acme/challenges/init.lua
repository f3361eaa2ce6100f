--- certmaint.acme.challenges: the challenge solvers a policy names, in the
-- order it prefers them.
--
--   challenges = {
--     http01 = { listen = "0.0.0.0:80" },           -- certmaint.acme.challenges.http01
--     webroot = "/srv/www",                           -- .webroot
--     dns01 = { present = fn, cleanup = fn },         -- .dns01
--     tls_alpn01 = { listen = "0.0.0.0:443" },        -- .tls_alpn01
--     prefer = { "dns01", "http01" },                 -- optional: the order to try them
--   }
--
-- Without `prefer` the order is DEFAULT_ORDER. For each authorization the first
-- solver whose challenge type the CA offers is used (for a wildcard name only
-- dns-01 can be); when its present() fails the next one that fits is tried.
--
-- A solver module exports TYPE ("http-01" | "dns-01" | "tls-alpn-01"), SCHEMA
-- and new(opts, ctx) -> solver with present(chal), cleanup(chal) and an optional
-- wait(chal); see acme-plan's interface. chal = { identifier, wildcard, type,
-- token, key_authorization, dns_value, url }.
--
--   challenges.check(opts, what)  -> checked (raises naming the policy's file:line)
--   challenges.build(opts, ctx)   -> { solver, ... } in preference order, each
--                                    with .kind and .type
local options = require "certmaint.options"

local M = {}

M.KINDS = { "http01", "webroot", "tls_alpn01", "dns01" }
M.DEFAULT_ORDER = M.KINDS
local KNOWN = {}
for _, k in ipairs(M.KINDS) do KNOWN[k] = true end

function M.module(kind)
  return require("certmaint.acme.challenges." .. kind)
end

-- webroot = "/dir" is short for webroot = { dir = "/dir" }
local function solver_opts(kind, v)
  if kind == "webroot" and type(v) == "string" then return { dir = v } end
  return v
end

--- Check a challenges table at policy load (each solver's own options too,
-- by constructing it: constructors open nothing). Returns a normalised copy
-- { order = { kind, ... }, opts = { kind = opts } }.
function M.check(opts, what, level)
  level = (level or 2) + 1
  local function fail(msg) error(options.where(level) .. what .. ": " .. msg, 0) end
  if type(opts) ~= "table" then fail("option \"challenges\" must be a table, not " .. type(opts)) end
  local known = { prefer = true }
  for _, k in ipairs(M.KINDS) do known[k] = true end
  local bad, hint, names = options.unknown(opts, known)
  if bad ~= nil then fail("challenges: " .. options.unknown_message(bad, hint, names)) end
  local out = { order = {}, opts = {} }
  local prefer = opts.prefer
  if prefer ~= nil then
    if type(prefer) ~= "table" or #prefer == 0 then fail("challenges.prefer must be a list of challenge kinds") end
    for i, k in ipairs(prefer) do
      if not KNOWN[k] then
        fail(string.format("challenges.prefer[%d] is %q: expected one of %s", i, tostring(k), table.concat(M.KINDS, ", ")))
      end
      if opts[k] == nil then fail(string.format("challenges.prefer[%d] names %q, which is not configured", i, k)) end
    end
  end
  for _, k in ipairs(prefer or M.DEFAULT_ORDER) do
    if opts[k] ~= nil then
      local mod = M.module(k)
      local o = solver_opts(k, opts[k])
      mod.new(o, {}) -- raises on a bad option, naming the policy line
      out.order[#out.order + 1] = k
      out.opts[k] = o
    end
  end
  if prefer then
    -- configured but not listed in prefer: tried after the listed ones
    for _, k in ipairs(M.DEFAULT_ORDER) do
      local listed = false
      for _, p in ipairs(out.order) do if p == k then listed = true end end
      if not listed and opts[k] ~= nil then
        local o = solver_opts(k, opts[k])
        M.module(k).new(o, {})
        out.order[#out.order + 1] = k
        out.opts[k] = o
      end
    end
  end
  if #out.order == 0 then
    fail("challenges: configure at least one of " .. table.concat(M.KINDS, ", "))
  end
  return out
end

--- Solvers from a checked table (M.check's result), in preference order.
function M.build(checked, ctx)
  local list = {}
  for _, k in ipairs(checked.order) do
    local mod = M.module(k)
    local s = mod.new(checked.opts[k], ctx)
    list[#list + 1] = { kind = k, type = mod.TYPE, solver = s }
  end
  return list
end

--- The solvers of `list` (build's) that can answer an authorization offering
-- `offered` (type -> challenge), in order: { entry, challenge } pairs.
function M.candidates(list, offered, wildcard)
  local out = {}
  for _, e in ipairs(list) do
    local ch = offered[e.type]
    if ch and (not wildcard or e.type == "dns-01") then out[#out + 1] = { entry = e, challenge = ch } end
  end
  return out
end

return M
