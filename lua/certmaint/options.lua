--- Option tables for constructors (issuers, storage, deploy helpers).
--
-- `options.check(opts, schema, what, level)` rejects unknown keys and wrong
-- types, naming the key and the caller's file:line, and returns a new table
-- with defaults applied and durations turned into seconds.
--
-- schema = { key = { type = "string"|"number"|"boolean"|"table"|"function"|"duration"|"any",
--                    default = v, required = bool, check = function(v) -> ok, why } }
local duration = require "certmaint.duration"

local M = {}

--- "file:line: " of the caller: the first Lua frame above `level` that is
-- not certmaint's own code (tail calls and wrappers do not shift it).
local OWN_DIR = debug.getinfo(1, "S").source:match("^(.*/)[^/]*$") or "\0"

local function where(level)
  for l = level + 1, level + 20 do
    local info = debug.getinfo(l, "Sl")
    if not info then break end
    if info.what ~= "C" and info.currentline and info.currentline > 0
       and info.source:sub(1, #OWN_DIR) ~= OWN_DIR then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
  end
  return ""
end
M.where = where

function M.check(opts, schema, what, level)
  level = (level or 2) + 1
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(where(level) .. what .. ": options must be a table, not " .. type(opts), 0)
  end
  for k in pairs(opts) do
    if not schema[k] then
      local known = {}
      for name in pairs(schema) do known[#known + 1] = name end
      table.sort(known)
      error(string.format("%s%s: unknown option %q (known: %s)", where(level), what,
        tostring(k), table.concat(known, ", ")), 0)
    end
  end
  local out = {}
  for k, rule in pairs(schema) do
    local v = opts[k]
    if v == nil then
      v = rule.default
      if v == nil and rule.required then
        error(string.format("%s%s: option %q is required", where(level), what, k), 0)
      end
    end
    if v ~= nil then
      if rule.type == "duration" then
        local secs, err = duration.parse(v, k)
        if not secs then error(string.format("%s%s: %s", where(level), what, err), 0) end
        v = secs
      elseif rule.type ~= "any" and type(v) ~= rule.type then
        error(string.format("%s%s: option %q must be a %s, not %s", where(level), what, k,
          rule.type, type(v)), 0)
      end
      if rule.check then
        local ok, why = rule.check(v)
        if not ok then
          error(string.format("%s%s: option %q %s", where(level), what, k, why or "is invalid"), 0)
        end
      end
    end
    out[k] = v
  end
  return out
end

return M
