--- certmaint.issuer: where certificates come from.
--
--   issuer = certmaint.issuer.internal { lifetime = "7d" }
--
-- An issuer is an object (a table or userdata) with
--   issuer:issue(req, ctx) -> { chain_pem = "..." [, key_pem =, commit_deletes =] } | nil, err, code
--                                                                        (required)
--     req = { names = {...}, csr_pem = "...", key_pem = "..." (the CSR's key), key_type = "p256",
--             profile = "..." | nil,        (the policy's `profile`: ACME profiles extension)
--             replaces = "<ARI cert ID>" | nil, (RFC 9773: the certificate this one replaces,
--                                           only when it came from this issuer)
--             preferred_chain = ... | nil }
--     ctx = { storage = backend, now = unix seconds }
--     The answer's key_pem (optional) says the certificate is for another key than
--     req.key_pem (an order finished after a crash, made with the earlier attempt's
--     key); commit_deletes (optional) lists storage keys the engine deletes in the
--     very commit that stores the certificate (the issuer's state for the order).
--     err may be a table { message = ..., final = true } for errors not worth retrying,
--     with `retry_after` (absolute Unix time) when the CA said when to come back
--   issuer:revoke(cert, ctx) -> true | nil, err, code                      (optional: `certmaint revoke`;
--                                                     ctx.reason: the RFC 5280 reason code, or nil)
--   issuer:renewal_info(cert, ctx) -> { start = t, ["end"] = t, explanation_url = s, retry_after = t }
--     | nil, err, code ("unsupported" when the CA has no ARI)            (optional: RFC 9773 ARI)
--   issuer:start(ctx) -> true | nil, err, code: begin what the issuer serves while the
--     daemon runs (ACME: http-01 standby listeners); the engine calls it at start-up and
--     after SIGHUP, ctx = { storage =, hooks = }; a failure is logged, not fatal
--                                                                        (optional)
--   issuer:storage_key() -> the folder under certificates/ ("local", "127.0.0.1-14000-dir")
--                                                                        (optional: default "custom")
--   issuer:describe() -> text for logs                                     (optional: default "custom issuer")
-- Each method may be a function or a callable table. issuer.check(obj) is the
-- one place this is checked (certmaint.policy calls it for the `issuer` field);
-- issuer.storage_key(obj) / issuer.describe(obj) answer for the optional ones.
--
-- A policy's `issuer` may also be a list, `issuer = { a, b }`: issuer.list
-- wraps it (issuer.members(x) gives the list back, a single issuer as a list
-- of one). The engine tries the members for a name in order (or, with
-- `issuer_policy = "first_random"`, shuffled: certmagic's UseFirstRandomIssuer),
-- the next one when one fails, and keeps a certificate in the storage folder
-- of the member that issued it (engine/renew.lua, engine/load.lua).
local options = require "certmaint.options"

local M = {}

M.REQUIRED = { "issue" }
M.OPTIONAL = { "revoke", "storage_key", "describe", "renewal_info", "start" }
M.POLICIES = { "in_order", "first_random" } -- issuer_policy values
M.DEFAULT_STORAGE_KEY = "custom"

local HINTS = {
  issue = "issue(req, ctx) -> { chain_pem = ... } | nil, err",
  revoke = "revoke(cert, ctx) -> true | nil, err",
  storage_key = "storage_key() -> a folder name",
  describe = "describe() -> text for logs",
  renewal_info = "renewal_info(cert, ctx) -> { start =, [\"end\"] =, retry_after = } | nil, err",
  start = "start(ctx) -> true | nil, err",
}

local function method(obj, name)
  -- a strict object may raise on a missing key: that is "missing", not a crash
  local ok, f = pcall(function() return obj[name] end)
  if ok then return f end
  return nil
end

--- Is `obj` an issuer for everything the engine and CLI call on it?
-- Returns true, or nil, message naming the method ("issuer.describe must be a
-- function, got string"), method name.
function M.check(obj)
  local t = type(obj)
  if t ~= "table" and t ~= "userdata" then
    return nil, "expected an issuer object (with methods issue), got " .. t, nil
  end
  for _, name in ipairs(M.REQUIRED) do
    local f = method(obj, name)
    if f == nil then
      return nil, string.format("issuer.%s is missing (an issuer needs %s)", name, HINTS[name]), name
    end
    if not options.callable(f) then
      return nil, string.format("issuer.%s must be a function, got %s", name, type(f)), name
    end
  end
  for _, name in ipairs(M.OPTIONAL) do
    local f = method(obj, name)
    if f ~= nil and not options.callable(f) then
      return nil, string.format("issuer.%s must be a function (%s) when present, got %s", name,
        HINTS[name], type(f)), name
    end
  end
  return true
end

--- The issuer's storage folder: obj:storage_key(), or DEFAULT_STORAGE_KEY when
-- it has none. Raises when storage_key() returns something that is not a
-- non-empty string (the engine builds storage keys from it).
function M.storage_key(obj)
  local f = method(obj, "storage_key")
  if f == nil then return M.DEFAULT_STORAGE_KEY end
  local key = f(obj)
  if type(key) ~= "string" or key == "" then
    error("issuer:storage_key() must return a non-empty string, got " .. type(key), 2)
  end
  return key
end

--- Text for logs: obj:describe(), or "custom issuer" when it has none.
function M.describe(obj)
  local f = method(obj, "describe")
  if f == nil then return "custom issuer" end
  return tostring(f(obj))
end

----------------------------------------------------------------------------
-- Issuer lists

local List = {}
List.__index = List
local LIST_MT = List

--- Is v a list of issuers ({ a, b }: a table with positional members and no
-- issue method of its own)?
function M.is_list(v)
  return type(v) == "table" and getmetatable(v) == nil and rawget(v, "issue") == nil and v[1] ~= nil
end

--- Check a list of issuers: true, or nil, message naming the member
-- ("issuer[2].issue is missing ..."), method name.
function M.check_list(v)
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, string.format("a list of issuers has only positional members, found key %s", tostring(k)), nil
    end
  end
  for i = 1, n do
    local ok, why, method = M.check(v[i])
    if not ok then return nil, string.format("[%d]: %s", i, why), method or "issue" end
  end
  return true
end

--- issuer.list({ a, b } [, policy]) -> an issuer made of several: members in
-- `.members`; itself an issuer (issue tries each in turn, storage_key and
-- renewal_info are the first member's), so code that wants one issuer still
-- has one. Raises on a bad list (certmaint.policy checks it first).
function M.list(members, policy)
  if getmetatable(members) == LIST_MT then return members end
  local ok, why = M.check_list(members)
  if not ok then error("certmaint.issuer.list: issuer" .. why, 2) end
  policy = policy or "in_order"
  local known = false
  for _, p in ipairs(M.POLICIES) do known = known or p == policy end
  if not known then error("certmaint.issuer.list: unknown issuer policy " .. tostring(policy), 2) end
  local copy = {}
  for i, m in ipairs(members) do copy[i] = m end
  return setmetatable({ members = copy, policy = policy }, LIST_MT)
end

--- The issuers of x in the order to try them for one certificate: a list's
-- members (shuffled with "first_random", each call anew), or { x }.
-- `random` (optional) is math.random's stand-in, for specs.
function M.order(x, policy, random)
  local members = M.members(x)
  local out = {}
  for i, m in ipairs(members) do out[i] = m end
  policy = policy or (getmetatable(x) == LIST_MT and x.policy) or "in_order"
  if policy == "first_random" then
    random = random or math.random
    for i = #out, 2, -1 do
      local j = random(i)
      out[i], out[j] = out[j], out[i]
    end
  end
  return out
end

--- The members of x: a list's, or { x } for one issuer.
function M.members(x)
  if getmetatable(x) == LIST_MT then return x.members end
  return { x }
end

--- Does `obj` have method `name` (renewal_info, revoke)?
function M.has(obj, name)
  return method(obj, name) ~= nil
end

function List:storage_key() return M.storage_key(self.members[1]) end

function List:describe()
  local parts = {}
  for i, m in ipairs(self.members) do parts[i] = M.describe(m) end
  return table.concat(parts, ", then ")
end

--- Try each member until one issues (the engine does this itself, to keep
-- each certificate under its issuer's folder; this is for other callers).
function List:issue(req, ctx)
  local errs, last_err, last_code = {}, nil, nil
  for _, m in ipairs(M.order(self)) do
    local res, err, code = m:issue(req, ctx)
    if res then return res end
    last_err, last_code = err, code
    errs[#errs + 1] = M.describe(m) .. ": " .. tostring(type(err) == "table" and err.message or err)
  end
  if #errs == 1 then return nil, last_err, last_code end
  return nil, { message = "every issuer failed: " .. table.concat(errs, "; ") }, last_code
end

function M.internal(opts)
  return require("certmaint.issuer.internal").new(opts)
end

function M.acme(opts)
  return require("certmaint.issuer.acme").new(opts)
end

return M
