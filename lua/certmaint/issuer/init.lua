--- certmaint.issuer: where certificates come from.
--
--   issuer = certmaint.issuer.internal { lifetime = "7d" }
--
-- An issuer is an object (a table or userdata) with
--   issuer:issue(req, ctx) -> { chain_pem = "..." } | nil, err, code      (required)
--     req = { names = {...}, csr_pem = "...", key_type = "p256" }
--     ctx = { storage = backend, now = unix seconds }
--     err may be a table { message = ..., final = true } for errors not worth retrying
--   issuer:revoke(cert, ctx) -> true | nil, err, code                      (optional: `certmaint revoke`)
--   issuer:storage_key() -> the folder under certificates/ ("local", "127.0.0.1-14000-dir")
--                                                                        (optional: default "custom")
--   issuer:describe() -> text for logs                                     (optional: default "custom issuer")
-- Each method may be a function or a callable table. issuer.check(obj) is the
-- one place this is checked (certmaint.policy calls it for the `issuer` field);
-- issuer.storage_key(obj) / issuer.describe(obj) answer for the optional ones.
local options = require "certmaint.options"

local M = {}

M.REQUIRED = { "issue" }
M.OPTIONAL = { "revoke", "storage_key", "describe" }
M.DEFAULT_STORAGE_KEY = "custom"

local HINTS = {
  issue = "issue(req, ctx) -> { chain_pem = ... } | nil, err",
  revoke = "revoke(cert, ctx) -> true | nil, err",
  storage_key = "storage_key() -> a folder name",
  describe = "describe() -> text for logs",
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

function M.internal(opts)
  return require("certmaint.issuer.internal").new(opts)
end

return M
