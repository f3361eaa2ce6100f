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
-- Lock grants take tokens from state.tokens (per lock key, never reset); a
-- commit is journalled in state.journal with the file backend's steps, so a
-- crash injected between any two of them (crash_after) leaves what a crashed
-- process would, for recover() on another instance to finish.
--
-- Options: share (another memory storage whose data and locks to use),
-- stale_after, poll_interval (durations), max_bytes.
local core = require "certmaint.core"
local options = require "certmaint.options"
local common = require "certmaint.storage.common"

local M = {}

local Memory = {}
Memory.__index = Memory
common.install(Memory) -- lock, try_lock, unlock, refresh_locks, recover, load_into_cache

local SCHEMA = {
  share = { type = "table",
    check = function(v) return getmetatable(v) == Memory, "must be a memory storage" end },
  stale_after = { type = "duration", default = common.STALE_AFTER, check = common.more_than_zero },
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
    state = o.share and o.share.state or { files = {}, dirs = {}, locks = {}, tokens = {}, journal = {} },
    stale_after = o.stale_after,
    heartbeat_interval = common.heartbeat_for(o.stale_after),
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

-- The directories are counted, not searched for: state.dirs[d] is how many
-- files lie below d, kept by put_file and drop_file (every change of
-- state.files goes through them), so a store or a delete is O(depth), not a
-- scan of every key (10,000 failing certificates storing their retry state
-- took minutes when each store scanned the store).
local function put_file(state, key, rec)
  if not state.files[key] then
    local dirs = state.dirs
    for dir in key:gmatch("()/") do
      local d = key:sub(1, dir - 1)
      dirs[d] = (dirs[d] or 0) + 1
    end
  end
  state.files[key] = rec
end

local function drop_file(state, key)
  if not state.files[key] then return end
  state.files[key] = nil
  local dirs = state.dirs
  for dir in key:gmatch("()/") do
    local d = key:sub(1, dir - 1)
    local n = dirs[d] - 1
    dirs[d] = n > 0 and n or nil
  end
end

-- Is key a directory: some file lies below it?
function Memory:is_dir(key)
  return key == "" or self.state.dirs[key] ~= nil
end

-- The same refusals as a file system: a file cannot be a directory too.
function Memory:check_target(key)
  local files = self.state.files
  local dir = key:match("^(.*)/[^/]*$")
  while dir do
    if files[dir] then
      return nil, "mkdir " .. dir .. ": Not a directory", "ENOTDIR"
    end
    dir = dir:match("^(.*)/[^/]*$")
  end
  if self:is_dir(key) then return nil, "rename " .. key .. ": Is a directory", "EISDIR" end
  return true
end

--- store(key, value [, {mode=}]) -> true | nil, err, code
function Memory:store(key, value, opts)
  common.check_key(key, "store", false, 2)
  if type(value) ~= "string" then
    error("storage store: value must be a string, not " .. type(value), 2)
  end
  local mode = common.store_mode(key, opts, "0600", 2)
  local files = self.state.files
  local ok, err, code = self:check_target(key)
  if not ok then return nil, err, code end
  if #value > self.max_bytes then
    -- the file backend could write it but never read it back: refuse early
    return nil, "store " .. key .. ": larger than " .. self.max_bytes .. " bytes", "toobig"
  end
  put_file(self.state, key, { value = value, modified = core.now(), mode = mode })
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

--- load_many(keys) -> found, failed (as the file backend)
function Memory:load_many(list)
  if type(list) ~= "table" then error("storage load_many: keys must be a list", 2) end
  local found, failed = {}, {}
  local files = self.state.files
  for i = 1, #list do
    local key = common.check_key(list[i], "load_many", false, 2)
    local f = files[key]
    if f then
      found[key] = f.value
    elseif self:is_dir(key) then
      failed[key] = { message = "read " .. key .. ": Is a directory", code = "EISDIR" }
    else
      failed[key] = { message = "read " .. key .. ": No such file or directory", code = "ENOENT" }
    end
  end
  return found, failed
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

local function delete_tree(state, key)
  drop_file(state, key)
  if not state.dirs[key] then return end
  local prefix = key .. "/"
  local doomed = {}
  for k in pairs(state.files) do
    if k:sub(1, #prefix) == prefix then doomed[#doomed + 1] = k end
  end
  for _, k in ipairs(doomed) do drop_file(state, k) end
end

--- delete(key) -> true.  A directory goes with everything below it.
function Memory:delete(key)
  common.check_key(key, "delete", false, 2)
  delete_tree(self.state, key)
  return true
end

-- ---- locks (the primitives under common.lua's lock life cycle) -------------

function Memory:_acquire(lk, name, grant)
  local now = core.now()
  local locks = self.state.locks
  local rec = locks[lk]
  if rec then
    if rec.owner == self.owner then return false, rec.owner .. " (this instance)" end
    if not common.is_stale(rec.updated, now, self.stale_after) then return false, rec.owner end
    core.log("warn", "lock_taken_over", { lock = name, stale_owner = rec.owner,
      storage = self:describe() })
  end
  local token = (self.state.tokens[lk] or 0) + 1
  self.state.tokens[lk] = token
  locks[lk] = { owner = self.owner, created = now, updated = now, grant = grant, token = token }
  return true, token
end

function Memory:_release(lk, grant)
  local rec = self.state.locks[lk]
  if not rec then return "none" end
  if rec.owner ~= self.owner then return false, rec.owner end
  if grant ~= nil and rec.grant ~= grant then return false, rec.owner .. " (another grant)" end
  self.state.locks[lk] = nil
  return true
end

function Memory:_refresh(lock, now)
  local rec = self.state.locks[lock.key]
  if rec and rec.owner == self.owner and rec.grant == lock.grant then
    rec.updated = now
    return true
  end
  return false, rec and rec.owner
end

function Memory:_holds(lock)
  local rec = self.state.locks[lock.key]
  if rec and rec.owner == self.owner and rec.grant == lock.grant then return true end
  return false, rec and rec.owner
end

-- ---- commit: the journal in a table ------------------------------------------

-- After the commit point, as the file backend: each put (one step each), the
-- "fsync" (one step), each delete (one step each), removing the transaction
-- (one step).  Every step can be redone.
function Memory:apply(txn, step)
  local state, now = self.state, core.now()
  for _, p in ipairs(txn.puts) do
    step()
    put_file(state, p.key, { value = p.value, modified = now, mode = p.mode })
  end
  step()
  for _, key in ipairs(txn.deletes) do
    step()
    delete_tree(state, key)
  end
  step()
  self.state.journal[txn.id] = nil
  return true
end

function Memory:recover_with(step)
  local journal = self.state.journal
  local ids = {}
  for id in pairs(journal) do ids[#ids + 1] = id end
  if #ids == 0 then return 0, 0 end
  table.sort(ids)
  local rolled, discarded = 0, 0
  for _, id in ipairs(ids) do
    local txn = journal[id]
    if txn.committed then
      self:apply(txn, step)
      rolled = rolled + 1
      core.log("warn", "storage_txn_rolled_forward", { txn = id, storage = self:describe() })
    elseif common.txn_abandoned(self, id, core.now()) then
      step()
      journal[id] = nil
      discarded = discarded + 1
    end
  end
  return rolled, discarded
end

--- commit{put =, delete =, fence =} -> true | nil, err, code (see the file
-- backend: the same steps, counted the same way by crash_after)
function Memory:commit(tx)
  local puts, deletes, step, fence = common.begin_commit(self, tx, "0600", function(p)
    local ok, err, code = self:check_target(p.key)
    if not ok then return nil, err, code end
    if #p.value > self.max_bytes then
      return nil, "commit " .. p.key .. ": larger than " .. self.max_bytes .. " bytes", "toobig"
    end
    return true
  end, 2)
  if puts == true or puts == nil then return puts, deletes, step end
  local id = common.new_txn_id(self, core.now())
  local txn = { id = id, owner = self.owner, puts = {}, deletes = deletes, committed = false }
  self.state.journal[id] = txn
  for i, p in ipairs(puts) do
    step()
    txn.puts[i] = p
  end
  step()
  local ok, err, code = common.check_fence(self, fence)
  if not ok then
    self.state.journal[id] = nil
    return nil, err, code
  end
  txn.committed = true
  return self:apply(txn, step)
end

return M
