--- certmaint.storage.file: storage in a directory tree, certmagic's layout.
--
--   local storage = require("certmaint.storage.file").new { root = "/var/lib/certmaint" }
--
-- Keys map to files under root ("certificates/x/y.crt" -> root/certificates/
-- x/y.crt).  Every write is atomic (core.write_atomic: temp file, fsync,
-- rename, fsync the directory); directories are made 0700, private keys
-- written 0600 always, other files file_mode (default 0600, as certmagic).
-- Reads are bounded (max_bytes, default 16 MiB).
--
-- Locks are certmagic's lock files, so certmaint and Caddy exclude each other:
-- "locks/<safe name>.lock" created exclusively, holding JSON {created,
-- updated, owner}.  The holder rewrites `updated` every 5 s (refresh_locks,
-- called by the engine's heartbeat); a lock not refreshed for stale_after
-- (default 10 s) is stale and taken over with a compare-and-swap
-- (core.replace_if_unchanged), so two instances that both see it stale cannot
-- both win.  A busy lock is polled every poll_interval inside a loop task and
-- refused at once ("locked") outside one.  Times are core.now().
--
-- Options: root (required), stale_after, poll_interval (durations),
-- file_mode, dir_mode (octal strings), max_bytes.
local core = require "certmaint.core"
local lfs = require "lfs"
local options = require "certmaint.options"
local common = require "certmaint.storage.common"

local M = {}

local File = {}
File.__index = File

local function octal(v)
  if v:match("^0?[0-7][0-7][0-7]$") then return true end
  return false, "must be an octal string like \"0600\""
end

local SCHEMA = {
  root = { type = "string", required = true,
    check = function(v) return v ~= "", "must not be empty" end },
  stale_after = { type = "duration", default = common.STALE_AFTER },
  poll_interval = { type = "duration", default = common.POLL_INTERVAL,
    check = function(v) return v > 0, "must be more than 0" end },
  file_mode = { type = "string", default = "0600", check = octal },
  dir_mode = { type = "string", default = "0700", check = octal },
  max_bytes = { type = "number", default = common.READ_MAX,
    check = function(v) return math.type(v) == "integer" and v > 0, "must be a positive integer" end },
}

local LOCK_FILE_MODE = "0644" -- as certmagic: lock files hold nothing secret

--- new{root=...} -> a file storage.  Nothing is created until the first write.
function M.new(opts)
  local o = options.check(opts, SCHEMA, "storage.file", 2)
  local root = o.root:gsub("(.)/+$", "%1")
  return setmetatable({
    root = root,
    stale_after = o.stale_after,
    poll_interval = o.poll_interval,
    file_mode = o.file_mode,
    dir_mode = o.dir_mode,
    max_bytes = o.max_bytes,
    owner = common.new_owner(),
    held = {},       -- lock key -> lock name, for the locks this instance holds
    unreadable = {}, -- lock key -> core.now() when first seen unreadable
  }, File)
end

function File:describe()
  return "file:" .. self.root
end

function File:path(key)
  if key == "" then return self.root end
  return self.root .. "/" .. key
end

local function parent_of(key)
  return key:match("^(.*)/[^/]*$")
end

-- Names of our own temp and aside files (core/fileio.c side_name): hidden from
-- listings, since a crash can leave one behind.
local function is_side_file(name)
  return name:match("^%..*%.tmp%-%x+$") ~= nil or name:match("^%..*%.stale%-%x+$") ~= nil
end

--- store(key, value [, {mode = "0644"}]) -> true | nil, err, code
function File:store(key, value, opts)
  common.check_key(key, "store", false, 2)
  if type(value) ~= "string" then
    error("storage store: value must be a string, not " .. type(value), 2)
  end
  local mode = common.store_mode(key, opts, self.file_mode, 2)
  local dir = parent_of(key)
  local ok, err, code = core.mkdir_p(dir and self:path(dir) or self.root, self.dir_mode)
  if not ok then return nil, err, code end
  return core.write_atomic(self:path(key), value, mode)
end

--- load(key) -> value | nil, err, code ("ENOENT" when missing)
function File:load(key)
  common.check_key(key, "load", false, 2)
  return core.read_file(self:path(key), self.max_bytes)
end

--- exists(key) -> true when key is a file or a directory (a prefix of keys)
function File:exists(key)
  common.check_key(key, "exists", true, 2)
  return core.stat(self:path(key)) ~= nil
end

--- stat(key) -> {key=, size=, modified=, terminal=} | nil, err, code
function File:stat(key)
  common.check_key(key, "stat", true, 2)
  local st, err, code = core.stat(self:path(key))
  if not st then return nil, err, code end
  return {
    key = key,
    size = st.size,
    modified = st.modified,
    terminal = st.type ~= "directory",
  }
end

local function dir_entries(path)
  local ok, iter, state = pcall(lfs.dir, path)
  if not ok then return nil, iter end
  local names = {}
  for name in iter, state do
    if name ~= "." and name ~= ".." and not is_side_file(name) then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

local function join(prefix, name)
  if prefix == "" then return name end
  return prefix .. "/" .. name
end

--- list(prefix, recursive) -> keys (sorted) | nil, err, code
-- Not recursive: the immediate children of prefix, files and directories
-- (certmagic's List).  Recursive: every file below prefix, at any depth.
-- Symbolic links are listed as files and never followed.
function File:list(prefix, recursive)
  common.check_key(prefix, "list", true, 2)
  local st, err, code = core.stat(self:path(prefix))
  if not st then return nil, "list " .. (prefix == "" and self.root or prefix) .. ": " .. err, code end
  if st.type ~= "directory" then
    return nil, "list " .. prefix .. ": not a directory", "ENOTDIR"
  end
  local out = {}
  local function walk(key, depth)
    local names, werr = dir_entries(self:path(key))
    if not names then return nil, werr end
    for _, name in ipairs(names) do
      local child = join(key, name)
      if not recursive then
        out[#out + 1] = child
      else
        local mode = lfs.symlinkattributes(self:path(child), "mode")
        if mode == "directory" then
          if depth >= 64 then return nil, "list " .. child .. ": deeper than 64 levels" end
          local ok, e = walk(child, depth + 1)
          if not ok then return nil, e end
        elseif mode then
          out[#out + 1] = child
        end
      end
    end
    return true
  end
  local ok, werr = walk(prefix, 0)
  if not ok then return nil, werr, "EIO" end
  return out
end

local function remove_tree(path)
  local mode = lfs.symlinkattributes(path, "mode")
  if mode == nil then return true end
  if mode ~= "directory" then return core.remove(path) end
  local ok, iter, state = pcall(lfs.dir, path)
  if not ok then return nil, "delete " .. path .. ": " .. tostring(iter), "EIO" end
  local names = {}
  for name in iter, state do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  for _, name in ipairs(names) do
    local rok, err, code = remove_tree(path .. "/" .. name)
    if not rok then return nil, err, code end
  end
  return core.rmdir(path)
end

--- delete(key) -> true | nil, err, code.  A directory is deleted with all
-- below it (certmagic); a missing key is not an error.
function File:delete(key)
  common.check_key(key, "delete", false, 2)
  local ok, err, code = remove_tree(self:path(key))
  if not ok and code ~= "ENOENT" then return nil, err, code end
  return true
end

-- ---- locks ---------------------------------------------------------------

-- The current lock record at lock key lk: text, record (nil if unreadable)
-- | nil, err, code ("ENOENT" when there is none).
function File:read_lock(lk)
  local text, err, code = core.read_file(self:path(lk), 64 * 1024)
  if not text then return nil, err, code end
  return text, common.decode_lock(text)
end

-- One attempt at taking lock key lk (see common.acquire for the results).
function File:try_lock(name, lk)
  local now = core.now()
  local body = common.encode_lock(self.owner, now, now)
  local ok, err, code = core.mkdir_p(self:path(parent_of(lk)), self.dir_mode)
  if not ok then return nil, err, code end
  for _ = 1, 8 do -- a lock released or taken over between two steps: try again
    ok, err, code = core.create_exclusive(self:path(lk), body, LOCK_FILE_MODE)
    if ok then
      self.unreadable[lk] = nil
      return true
    end
    if code ~= "EEXIST" then return nil, err, code end
    local text, rec, rcode = self:read_lock(lk)
    if text then
      local stale, holder
      if rec then
        self.unreadable[lk] = nil
        holder = rec.owner == self.owner and rec.owner .. " (this instance)" or rec.owner
        stale = rec.owner ~= self.owner and common.is_stale(rec.updated, now, self.stale_after)
      else
        -- Empty or garbled (a writer without our atomic create, or a torn
        -- disk): stale once it has stayed unreadable for stale_after.
        self.unreadable[lk] = self.unreadable[lk] or now
        holder = "an unreadable lock file"
        stale = now - self.unreadable[lk] > self.stale_after
      end
      if not stale then return false, holder end
      ok, err, code = core.replace_if_unchanged(self:path(lk), text, body, LOCK_FILE_MODE)
      if ok then
        self.unreadable[lk] = nil
        core.log("warn", "lock_taken_over", { lock = name, stale_owner = rec and rec.owner or "?",
          storage = self:describe() })
        return true
      end
      if code ~= "changed" and code ~= "ENOENT" and code ~= "EEXIST" then return nil, err, code end
    elseif rcode ~= "ENOENT" then
      return nil, rec, rcode
    end
  end
  return false, "another instance (the lock changed hands repeatedly)"
end

--- lock(name [, {timeout = seconds}]) -> true | nil, err, "locked"|"timeout"|code
function File:lock(name, opts)
  local ok, err, code = common.lock(self, name, opts) -- not a tail call: error levels count this frame
  return ok, err, code
end

--- unlock(name) -> true | nil, err, code.  Removes the lock file only if it is
-- still this instance's ("notheld" otherwise; a lock taken over meanwhile is
-- left to its new owner).
function File:unlock(name)
  local lk = common.lock_key(name, 2)
  local was_held = self.held[lk] ~= nil
  self.held[lk] = nil
  local text, rec, code = self:read_lock(lk)
  if not text then
    if code == "ENOENT" and was_held then return true end
    if code == "ENOENT" then
      return nil, string.format("unlock %s: not held by this instance", name), "notheld"
    end
    return nil, rec, code
  end
  if not rec or rec.owner ~= self.owner then
    return nil, string.format("unlock %s: held by %s, not this instance", name,
      rec and rec.owner or "an unreadable lock file"), "notheld"
  end
  local ok, err, rcode = core.remove(self:path(lk))
  if not ok and rcode ~= "ENOENT" then return nil, err, rcode end
  return true
end

--- refresh_locks() -> refreshed, lost.  The heartbeat: rewrites `updated` of
-- every lock this instance holds.  lost lists the names of locks that are no
-- longer ours (taken over after we were stale, or removed); they are dropped
-- and logged.
function File:refresh_locks()
  local refreshed, lost = 0, {}
  local now = core.now()
  local held = {}
  for lk, name in pairs(self.held) do held[#held + 1] = { lk, name } end
  table.sort(held, function(a, b) return a[1] < b[1] end)
  for _, h in ipairs(held) do
    local lk, name = h[1], h[2]
    local text, rec, code = self:read_lock(lk)
    if not text and code ~= "ENOENT" then
      -- cannot tell (I/O error): keep it and try again at the next beat
      core.log("warn", "lock_refresh_failed", { lock = name, error = rec, storage = self:describe() })
    elseif text and rec and rec.owner == self.owner then
      local ok, err = core.write_atomic(self:path(lk), common.encode_lock(self.owner, rec.created, now),
        LOCK_FILE_MODE)
      if ok then
        refreshed = refreshed + 1
      else
        core.log("warn", "lock_refresh_failed", { lock = name, error = err, storage = self:describe() })
      end
    else
      self.held[lk] = nil
      lost[#lost + 1] = name
      core.log("error", "lock_lost", { lock = name, owner = rec and rec.owner or "none",
        storage = self:describe() })
    end
  end
  return refreshed, lost
end

return M
