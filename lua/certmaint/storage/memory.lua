--- certmaint.storage.memory: the storage contract in a Lua table, for specs.
--
--   local a = require("certmaint.storage.memory").new()
--   local b = require("certmaint.storage.memory").new { share = a } -- a second
--                                          -- "instance" on the same data
--
-- Behaves as the file backend does (same errors and codes, directories
-- implied by keys, locks with owners, staleness by core.now()), so a spec that
-- passes here means the same thing as one against files.
--
-- Options: share (another memory storage whose data and locks to use),
-- stale_after, poll_interval (durations), max_bytes.
local core = require "certmaint.core"
local options = require "certmaint.options"
local common = require "certmaint.storage.common"

local M = {}

local Memory = {}
Memory.__index = Memory

local SCHEMA = {
  share = { type = "table",
    check = function(v) return getmetatable(v) == Memory, "must be a memory storage" end },
  stale_after = { type = "duration", default = common.STALE_AFTER },
  poll_interval = { type = "duration", default = common.POLL_INTERVAL,
    check = function(v) return v > 0, "must be more than 0" end },
  max_bytes = { type = "number", default = common.READ_MAX,
    check = function(v) return math.type(v) == "integer" and v > 0, "must be a positive integer" end },
}

local instances = 0

--- new([opts]) -> a memory storage (empty, or sharing opts.share's data).
function M.new(opts)
  local o = options.check(opts, SCHEMA, "storage.memory", 2)
  instances = instances + 1
  return setmetatable({
    state = o.share and o.share.state or { files = {}, locks = {} },
    stale_after = o.stale_after,
    poll_interval = o.poll_interval,
    max_bytes = o.max_bytes,
    owner = common.new_owner(),
    id = instances,
    held = {},
  }, Memory)
end

function Memory:describe()
  return "memory:" .. self.id
end

local function enoent(op, key)
  return nil, op .. " " .. key .. ": No such file or directory", "ENOENT"
end

-- Is key a directory: some file lies below it?
function Memory:is_dir(key)
  if key == "" then return true end
  local prefix = key .. "/"
  for k in pairs(self.state.files) do
    if k:sub(1, #prefix) == prefix then return true end
  end
  return false
end

--- store(key, value [, {mode=}]) -> true | nil, err, code
function Memory:store(key, value, opts)
  common.check_key(key, "store", false, 2)
  if type(value) ~= "string" then
    error("storage store: value must be a string, not " .. type(value), 2)
  end
  local mode = common.store_mode(key, opts, "0600", 2)
  -- The same refusals as a file system: a file cannot be a directory too.
  local files = self.state.files
  local dir = key:match("^(.*)/[^/]*$")
  while dir do
    if files[dir] then
      return nil, "mkdir " .. dir .. ": Not a directory", "ENOTDIR"
    end
    dir = dir:match("^(.*)/[^/]*$")
  end
  if self:is_dir(key) then return nil, "rename " .. key .. ": Is a directory", "EISDIR" end
  if #value > self.max_bytes then
    -- the file backend could write it but never read it back: refuse early
    return nil, "store " .. key .. ": larger than " .. self.max_bytes .. " bytes", "toobig"
  end
  files[key] = { value = value, modified = core.now(), mode = mode }
  return true
end

--- load(key) -> value | nil, err, code
function Memory:load(key)
  common.check_key(key, "load", false, 2)
  local f = self.state.files[key]
  if f then return f.value end
  if self:is_dir(key) then return nil, "read " .. key .. ": Is a directory", "EISDIR" end
  return enoent("read", key)
end

function Memory:exists(key)
  common.check_key(key, "exists", true, 2)
  return self.state.files[key] ~= nil or self:is_dir(key)
end

--- stat(key) -> {key=, size=, modified=, terminal=} | nil, err, code
function Memory:stat(key)
  common.check_key(key, "stat", true, 2)
  local f = self.state.files[key]
  if f then return { key = key, size = #f.value, modified = f.modified, terminal = true } end
  if not self:is_dir(key) then return enoent("stat", key) end
  local newest, prefix = 0, key == "" and "" or key .. "/"
  for k, v in pairs(self.state.files) do
    if k:sub(1, #prefix) == prefix and v.modified > newest then newest = v.modified end
  end
  return { key = key, size = 0, modified = newest, terminal = false }
end

--- list(prefix, recursive) -> sorted keys | nil, err, code (as the file backend)
function Memory:list(prefix, recursive)
  common.check_key(prefix, "list", true, 2)
  if self.state.files[prefix] then return nil, "list " .. prefix .. ": not a directory", "ENOTDIR" end
  if not self:is_dir(prefix) then
    return nil, "list " .. prefix .. ": No such file or directory", "ENOENT"
  end
  local p = prefix == "" and "" or prefix .. "/"
  local seen, out = {}, {}
  for k in pairs(self.state.files) do
    if k:sub(1, #p) == p then
      local child = recursive and k or p .. k:sub(#p + 1):match("^[^/]+")
      if not seen[child] then
        seen[child] = true
        out[#out + 1] = child
      end
    end
  end
  table.sort(out)
  return out
end

--- delete(key) -> true.  A directory goes with everything below it.
function Memory:delete(key)
  common.check_key(key, "delete", false, 2)
  local files = self.state.files
  files[key] = nil
  local prefix = key .. "/"
  local doomed = {}
  for k in pairs(files) do
    if k:sub(1, #prefix) == prefix then doomed[#doomed + 1] = k end
  end
  for _, k in ipairs(doomed) do files[k] = nil end
  return true
end

-- ---- locks ---------------------------------------------------------------

function Memory:try_lock(name, lk)
  local now = core.now()
  local locks = self.state.locks
  local rec = locks[lk]
  if rec then
    if rec.owner == self.owner then return false, rec.owner .. " (this instance)" end
    if not common.is_stale(rec.updated, now, self.stale_after) then return false, rec.owner end
    core.log("warn", "lock_taken_over", { lock = name, stale_owner = rec.owner,
      storage = self:describe() })
  end
  locks[lk] = { owner = self.owner, created = now, updated = now }
  return true
end

--- lock(name [, {timeout = seconds}]) -> true | nil, err, "locked"|"timeout"
function Memory:lock(name, opts)
  local ok, err, code = common.lock(self, name, opts) -- not a tail call: error levels count this frame
  return ok, err, code
end

--- unlock(name) -> true | nil, err, "notheld"
function Memory:unlock(name)
  local lk = common.lock_key(name, 2)
  local was_held = self.held[lk] ~= nil
  self.held[lk] = nil
  local rec = self.state.locks[lk]
  if not rec then
    if was_held then return true end
    return nil, string.format("unlock %s: not held by this instance", name), "notheld"
  end
  if rec.owner ~= self.owner then
    return nil, string.format("unlock %s: held by %s, not this instance", name, rec.owner),
      "notheld"
  end
  self.state.locks[lk] = nil
  return true
end

--- refresh_locks() -> refreshed, lost (see the file backend)
function Memory:refresh_locks()
  local refreshed, lost = 0, {}
  local now = core.now()
  local held = {}
  for lk, name in pairs(self.held) do held[#held + 1] = { lk, name } end
  table.sort(held, function(a, b) return a[1] < b[1] end)
  for _, h in ipairs(held) do
    local rec = self.state.locks[h[1]]
    if rec and rec.owner == self.owner then
      rec.updated = now
      refreshed = refreshed + 1
    else
      self.held[h[1]] = nil
      lost[#lost + 1] = h[2]
      core.log("error", "lock_lost", { lock = h[2], owner = rec and rec.owner or "none",
        storage = self:describe() })
    end
  end
  return refreshed, lost
end

return M
