--- Option tables for Lua constructors (issuers, storage, deploy helpers): the
-- one checker, so every Lua option error reads the same way.
--
--   local o = options.check(opts, SCHEMA, "certmaint.deploy.files" [, level])
--
-- rejects unknown keys and wrong types, naming the key and the caller's
-- file:line, and returns a NEW table with defaults applied and durations turned
-- into seconds. Errors (raised: a bad option table is the caller's bug):
--
--   policy.lua:7: certmaint.deploy.files: unknown option "layuot" (did you mean "layout"? known: dir, layout, reload)
--   policy.lua:7: certmaint.deploy.files: unknown option "x" (known: dir, layout, reload)
--   policy.lua:7: certmaint.deploy.files: option "dir" is required
--   policy.lua:7: certmaint.deploy.files: option "dir" must be a string, not number
--   policy.lua:7: certmaint.issuer.internal: lifetime: bad duration "soon" (use seconds or "90s", "10m", "1h", "7d")
--   policy.lua:7: certmaint.deploy.files: option "layout" must be "split" or "haproxy"
--
-- schema = { key = { type = T, default = v, required = bool, check = function(v) -> ok, why } }
--   T: "string" | "number" | "boolean" | "table" | "function" (any callable) |
--      "duration" (seconds or "90s", "10m", "1h", "7d"; becomes seconds) | "any"
--   default: a value, used when the key is absent (a function default is a value, not a factory)
--   check: runs on the value after the type check (durations: on the seconds)
--
-- The policy's own fields (certmaint.policy) are not options: they are checked
-- by certmaint.policy's schema and named "policy field ...", but unknown keys
-- there are found and suggested by the same options.unknown().
local duration = require "certmaint.duration"

local M = {}

----------------------------------------------------------------------------
-- "did you mean": restricted Damerau-Levenshtein (optimal string alignment)
-- distance, also against prefixes of the candidate, so "renew_windwo" finds
-- "renewal_window_ratio" (3 edits from "renewal_window") while "foo" finds nothing.

local function osa_row_distance(a, b)
  -- returns d where d[j] = distance(a, b:sub(1, j)) for j = 0..#b
  local la, lb = #a, #b
  local prev2, prev, cur = nil, {}, nil
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur = { [0] = i }
    local ai = a:byte(i)
    for j = 1, lb do
      local cost = (ai == b:byte(j)) and 0 or 1
      local v = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and ai == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, prev2[j - 2] + 1)
      end
      cur[j] = v
    end
    prev2, prev = prev, cur
  end
  return prev
end

--- The closest of `candidates` (a list of strings) to the unknown key `word`, or nil.
function M.suggest(word, candidates)
  if type(word) ~= "string" or word == "" then return nil end
  local lw = word:lower()
  local best, best_d, best_full
  for _, c in ipairs(candidates) do
    local row = osa_row_distance(lw, c)
    local full = row[#c]
    local d = full
    -- a prefix at least as long as the word (less a little) may match better
    for j = math.max(1, #lw - 2), #c do
      if row[j] < d then d = row[j] end
    end
    if not best or d < best_d or (d == best_d and full < best_full) then
      best, best_d, best_full = c, d, full
    end
  end
  if best and best_d <= math.max(2, #lw // 3) then return best end
  return nil
end

--- Is v a function or something with a __call metamethod?
function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

--- The sorted names of `known` (a set or a schema: the keys that are strings).
function M.names(known)
  local out = {}
  for k in pairs(known) do
    if type(k) == "string" then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

--- The first key of `t` (in sorted order, so errors are stable) that `known`
-- (a set or schema) does not have, or nil: key, suggestion (or nil), known names.
function M.unknown(t, known)
  local bad
  for k in pairs(t) do
    if type(k) ~= "string" or known[k] == nil then
      -- prefer a string key; among strings the smallest, so the message is stable
      if bad == nil or (type(k) == "string" and (type(bad) ~= "string" or k < bad)) then bad = k end
    end
  end
  if bad == nil then return nil end
  local names = M.names(known)
  return bad, M.suggest(bad, names), names
end

----------------------------------------------------------------------------
-- Where the caller is

--- "file:line: " of the caller: the first Lua frame from `level` up that is
-- not certmaint's own code (wrappers in lua/certmaint do not shift it), or "".
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

--- The one wording of an unknown key: `unknown option "x" (known: a, b)`, with
-- `did you mean "y"?` first when a known name is close.
function M.unknown_message(key, hint, names)
  if type(key) ~= "string" then
    return string.format("unexpected positional value [%s] (options are named: name = value; known: %s)",
      tostring(key), table.concat(names, ", "))
  end
  if hint then
    return string.format("unknown option %q (did you mean %q? known: %s)", key, hint, table.concat(names, ", "))
  end
  return string.format("unknown option %q (known: %s)", key, table.concat(names, ", "))
end

local TYPES = { string = true, number = true, boolean = true, table = true, ["function"] = true,
  duration = true, any = true }

local function has_type(v, t)
  if t == "any" then return true end
  if t == "function" then return M.callable(v) end
  return type(v) == t
end

--- Check `opts` against `schema` (see the top of this file); `what` names the
-- constructor in messages; `level` is where to blame, as error()'s level in
-- the function calling options.check: 2 (the default) is that function's
-- caller. Frames of certmaint's own modules are skipped (see where).
-- Returns the checked copy.
function M.check(opts, schema, what, level)
  level = (level or 2) + 2 -- + check itself + fail
  local function fail(msg) error(where(level) .. what .. ": " .. msg, 0) end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then fail("options must be a table, not " .. type(opts)) end
  local bad, hint, names = M.unknown(opts, schema)
  if bad ~= nil then fail(M.unknown_message(bad, hint, names)) end
  local out = {}
  for k, rule in pairs(schema) do
    if not TYPES[rule.type] then error("options.check: " .. what .. "." .. k .. " has no valid type", 2) end
    local v = opts[k]
    if v == nil then
      v = rule.default
      if v == nil and rule.required then fail(string.format("option %q is required", k)) end
    end
    if v ~= nil then
      if rule.type == "duration" then
        local secs, err = duration.parse(v, k)
        if not secs then fail(err) end
        v = secs
      elseif not has_type(v, rule.type) then
        fail(string.format("option %q must be a %s, not %s", k, rule.type, type(v)))
      end
      if rule.check then
        local ok, why = rule.check(v)
        if not ok then fail(string.format("option %q %s", k, why or "is invalid")) end
      end
    end
    out[k] = v
  end
  return out
end

return M
