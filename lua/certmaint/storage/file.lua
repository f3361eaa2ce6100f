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
-- updated, owner, grant}.  The last fencing token granted for a lock is kept
-- beside it in "locks/<safe name>.token" (JSON {token, owner, grant,
-- granted}), written atomically by the instance that just created (or took
-- over) the lock file, and never removed, so tokens grow across instances and
-- restarts.  The holder rewrites `updated` every 5 s (refresh_locks,
-- called by the engine's heartbeat); a lock not refreshed for stale_after
-- (default 10 s), or whose owner is a dead process of this host
-- (common.owner_dead: a restart after kill -9), is taken over with a compare-and-swap
-- (core.replace_if_unchanged), so two instances that both see it stale cannot
-- both win.  A busy lock is polled every poll_interval inside a loop task and
-- refused at once ("locked") outside one.  Times are core.now().
--
-- commit{} is a journal under "journal/<txn id>/" (a top-level folder of our
-- own: Caddy never looks there, and list("") hides it): the new values are
-- staged there as "0", "1", ... (each written atomically, fsynced, with its
-- final mode), then "manifest.json" is written atomically: the commit point.
-- Then each value is renamed into place, the target directories fsynced, the
-- deletes applied, and the transaction folder removed.  recover() finishes
-- every transaction that has a manifest (rolls forward; each step can be
-- redone, so a crash during recovery is fine) and removes those without one
-- (abandoned: ours, or older than stale_after).  commit() runs it first.
-- "journal" is therefore a reserved top-level key here.
--
-- Off the loop thread: commit's file work (staging, the manifest, apply) is
-- one C job (core.commit_job, core/commit.c: the same steps, fsyncs and
-- modes), run on the loop's worker threads from a loop task (loop.work: the
-- other tasks run meanwhile) and on the calling thread elsewhere; so is a
-- store() from a task.  The fence is still checked here, between the staging
-- job and the commit-point job.  Since commits of one instance may now
-- overlap, recover() skips this instance's transactions still in progress,
-- and writes to the same key wait for each other, so they land in call
-- order.  A reader in another task may see a set half applied, as another
-- instance's reader always could (the limit below).
--
-- Limits (a shared directory has no leases): the fence is checked just
-- before the commit point, so an instance paused longer than stale_after
-- exactly between that check and its manifest write could still land a
-- commit after a new holder's; a recover() by another instance while the
-- owner is still applying its own committed transaction redoes the same,
-- idempotent steps.  etcd's transactions close both windows.
--
-- Options: root (required), stale_after, poll_interval (durations),
-- file_mode, dir_mode (octal strings), max_bytes.
local core = require "certmaint.core"
local lfs = require "lfs"
local options = require "certmaint.options"
local common = require "certmaint.storage.common"
local keys = require "certmaint.keys"
local loop = require "certmaint.loop"
local rfc3339 = require "certmaint.rfc3339"
local staleness = require "certmaint.storage.staleness"

local M = {}

local File = {}
File.__index = File
common.install(File) -- lock, try_lock, unlock, refresh_locks, recover, load_into_cache (overridden below)

local function octal(v)
  if v:match("^0?[0-7][0-7][0-7]$") then return true end
  return false, "must be an octal string like \"0600\""
end

local SCHEMA = {
  root = { type = "string", required = true,
    check = function(v) return v ~= "", "must not be empty" end },
  stale_after = { type = "duration", default = common.STALE_AFTER, check = common.more_than_zero },
  -- clock difference between instances tolerated when judging a lock stale (storage/staleness.lua)
  max_skew = { type = "duration", default = staleness.MAX_SKEW },
  poll_interval = { type = "duration", default = common.POLL_INTERVAL,
    check = function(v) return v > 0, "must be more than 0" end },
  file_mode = { type = "string", default = "0600", check = octal },
  dir_mode = { type = "string", default = "0700", check = octal },
  max_bytes = { type = "number", default = common.READ_MAX,
    check = function(v) return math.type(v) == "integer" and v > 0, "must be a positive integer" end },
}

local LOCK_FILE_MODE = "0644" -- as certmagic: lock files hold nothing secret
local JOURNAL_DIR = "journal" -- commit's staging folder (see the commit section)

--- new{root=...} -> a file storage.  Nothing is created until the first write.
function M.new(opts)
  local o = options.check(opts, SCHEMA, "storage.file", 2)
  local root = o.root:gsub("(.)/+$", "%1")
  return setmetatable({
    root = root,
    stale_after = o.stale_after,
    heartbeat_interval = common.heartbeat_for(o.stale_after),
    poll_interval = o.poll_interval,
    file_mode = o.file_mode,
    dir_mode = o.dir_mode,
    max_bytes = o.max_bytes,
    owner = common.new_owner(),
    held = {},       -- lock key -> lock name, for the locks this instance holds
    unreadable = {}, -- lock key -> core.elapsed() when first seen unreadable
    seen_locks = staleness.new(o.max_skew), -- others' lock records as last seen (staleness.lua)
    writing = {},    -- key -> loop.cond of the commit or store writing it on a worker
    inflight = {},   -- txn id -> its write guard, while this instance's commit runs
  }, File)
end

function File:describe()
  return "file:" .. self.root
end

--- check_root(create) -> true, created | nil, err, code: is the root there?
-- A missing root is "storage root <root> does not exist" ("ENOENT") unless
-- create is true: then it is made (created = true).
function File:check_root(create)
  local st, err, code = core.stat(self.root)
  if st then
    if st.type ~= "directory" then return nil, "storage root " .. self.root .. " is not a directory", "ENOTDIR" end
    return true, false
  end
  if code ~= "ENOENT" then return nil, err, code end
  if not create then return nil, "storage root " .. self.root .. " does not exist", "ENOENT" end
  local ok
  ok, err, code = core.mkdir_p(self.root, self.dir_mode)
  if not ok then return nil, err, code end
  return true, true
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

-- Storage never writes through, or over, a symbolic link inside its root: a
-- link planted in certificates/ would otherwise send keys anywhere the daemon
-- may write. Each existing component of key is looked at with lstat, from
-- the root down (the root itself may be a link: the operator chose it).
-- -> true | nil, err, "ELOOP"
function File:refuse_symlinks(key, op)
  local prefix
  for part in key:gmatch("[^/]+") do
    prefix = prefix and (prefix .. "/" .. part) or part
    local mode = lfs.symlinkattributes(self:path(prefix), "mode")
    if mode == nil then return true end -- missing: nothing below exists either
    if mode == "link" then
      return nil, string.format("%s %s: %s in %s is a symbolic link (storage never writes through one)",
        op, key, prefix, self.root), "ELOOP"
    end
  end
  return true
end

--- store(key, value [, {mode = "0644"}]) -> true | nil, err, code
function File:store(key, value, opts)
  common.check_key(key, "store", false, 2)
  if type(value) ~= "string" then
    error("storage store: value must be a string, not " .. type(value), 2)
  end
  local mode = common.store_mode(key, opts, self.file_mode, 2)
  local safe, serr, scode = self:refuse_symlinks(key, "store")
  if not safe then return nil, serr, scode end
  if loop.in_task() and coroutine.isyieldable() then
    -- the fsyncs on a worker thread: the loop goes on meanwhile
    local guard <close> = self:begin_write({ key })
    local ok, err, code = loop.work(core.commit_job { root = self.root, dir_mode = self.dir_mode,
      puts = { { key = key, value = value, mode = mode } } }, "write")
    return ok, err, code
  end
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
  if recursive then
    -- one C walk (sorted like the memory backend's keys); 100k sites in a second
    local rel, werr, wcode = core.list_files(self:path(prefix), { skip_top = prefix == "" and JOURNAL_DIR or nil })
    if not rel then return nil, werr, wcode end
    if prefix ~= "" then
      local p = prefix .. "/"
      for i = 1, #rel do rel[i] = p .. rel[i] end
    end
    return rel
  end
  local names, werr = dir_entries(self:path(prefix))
  if not names then return nil, werr, "EIO" end
  local out = {}
  for _, name in ipairs(names) do
    if not (prefix == "" and name == JOURNAL_DIR) then out[#out + 1] = join(prefix, name) end
  end
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
  local dir = parent_of(key) -- the key itself may be a link: removing one never follows it
  if dir then
    local safe, serr, scode = self:refuse_symlinks(dir, "delete")
    if not safe then return nil, serr, scode end
  end
  local ok, err, code = remove_tree(self:path(key))
  if not ok and code ~= "ENOENT" then return nil, err, code end
  return true
end

--- clean_temp(before) -> removed (the relative paths, sorted) | nil, err, code.
-- Removes the temp and aside files of writes that never finished (a crash, a
-- kill -9 between write and rename: core/fileio.c's ".<name>.tmp-<hex>" and
-- ".<name>.stale-<hex>") last modified before `before` (core.now() time),
-- anywhere under the root; a write in progress is younger than that. The
-- journal is recover()'s business and left alone. Symbolic links are never
-- followed. The clean pass calls it (engine/clean.lua).
function File:clean_temp(before)
  if type(before) ~= "number" then error("storage clean_temp: before must be a number", 2) end
  local st, err, code = core.stat(self.root)
  if not st then
    if code == "ENOENT" then return {} end
    return nil, err, code
  end
  -- one C walk that makes strings only for the side files (a crash's
  -- leftovers, rare): the tree itself is 3 files a certificate
  local found, werr, wcode = core.list_files(self.root, { skip_top = JOURNAL_DIR, side_files = true })
  if not found then return nil, werr, wcode end
  local removed = {}
  for _, key in ipairs(found) do
    local path = self.root .. "/" .. key
    local attr = lfs.symlinkattributes(path)
    if attr and attr.mode ~= "directory" and attr.modification < before then
      if core.remove(path) then removed[#removed + 1] = key end
    end
  end
  table.sort(removed)
  return removed
end

-- A time as whole seconds the core takes: a policy's huge grace period
-- (now - 1e300) means before anything stored, not an error.
local function whole_seconds(t)
  if t ~= t then error("storage clean_scan: a time is NaN", 3) end
  return math.floor(math.max(math.min(t, 2 ^ 62), -2 ^ 62))
end

--- clean_scan{expired_before = t, temp_before = t} -> scan | nil, err, code:
-- the clean pass's one walk of the tree (core.clean_scan): every stored
-- certificate under certificates/ read on threads for its leaf's notAfter,
-- and the temp files of unfinished writes. scan = {certificates = n,
-- expired = {{key, not_after, id}}, failed = {{key, error, code}}, temp = {key}}.
function File:clean_scan(opts)
  if type(opts) ~= "table" or type(opts.expired_before) ~= "number" or type(opts.temp_before) ~= "number" then
    error("storage clean_scan: expired_before and temp_before must be numbers", 2)
  end
  local st, err, code = core.stat(self.root)
  if not st then
    if code == "ENOENT" then return { certificates = 0, expired = {}, failed = {}, temp = {} } end
    return nil, err, code
  end
  return core.clean_scan(self.root, { crt_top = keys.CERTS_PREFIX, skip_top = JOURNAL_DIR,
    expired_before = whole_seconds(opts.expired_before), temp_before = whole_seconds(opts.temp_before),
    threads = 4, max_bytes = math.min(self.max_bytes, 1024 * 1024) })
end

--- delete_many(keys [, {prune_empty = true}]) -> result | nil, err, code, result:
-- removes the files at keys (not folders), syncing each folder once rather
-- than once a file; result[key] = "removed" | "missing" | false. prune_empty
-- also removes a folder they leave empty. A link among the folders is
-- refused (that file kept), as delete does.
function File:delete_many(list, opts)
  if type(list) ~= "table" then error("storage delete_many: keys must be a list", 2) end
  local sorted = {}
  for i = 1, #list do sorted[i] = common.check_key(list[i], "delete_many", false, 2) end
  table.sort(sorted)
  local removed, err, code, partial = core.remove_many(self.root, sorted, { prune_empty = opts and opts.prune_empty })
  local out = {}
  for i, k in ipairs(sorted) do out[k] = (removed or partial)[i] end
  if not removed then return nil, err, code, out end
  return out
end

-- ---- bulk reads -------------------------------------------------------------

--- load_many(keys) -> found, failed: found[key] = value for each key read;
-- failed[key] = {message =, code =} for the others ("ENOENT" when missing,
-- "EISDIR", "toobig", ...).  One C call reads them all (core.read_files).
function File:load_many(list)
  if type(list) ~= "table" then error("storage load_many: keys must be a list", 2) end
  local n = #list
  for i = 1, n do common.check_key(list[i], "load_many", false, 2) end
  local values, failures = core.read_files(list, self.max_bytes, self.root)
  local found, failed = {}, {}
  for i = 1, n do
    local v = values[i]
    if v then found[list[i]] = v else failed[list[i]] = failures[i] end
  end
  return found, failed
end

--- file_paths(keys) -> paths: where the values at keys are (whether or not
-- they exist), for the core to read them on its threads (the OCSP pass's
-- cache:verify_staples_start with files = true). Not in the contract: a
-- caller checks for it and uses load_many otherwise.
function File:file_paths(list)
  if type(list) ~= "table" then error("storage file_paths: keys must be a list", 2) end
  local paths, root = {}, self.root .. "/"
  for i = 1, #list do paths[i] = root .. common.check_key(list[i], "file_paths", false, 2) end
  return paths
end

--- load_into_cache(cache, keys, opts) -> r (see common.load_into_cache):
-- one cache:add_many call whose parse threads read the files too, so the
-- file system's latency overlaps the parsing (the start-up path of 100k
-- certificates).
-- The paths and add_many options of a load_into_cache (level: the caller's
-- caller, for errors).
local function load_args(self, list, opts, op)
  if type(list) ~= "table" then error("storage " .. op .. ": keys must be a list", 3) end
  local paths, companions = {}, nil
  local root = self.root .. "/"
  for i = 1, #list do paths[i] = root .. common.check_key(list[i], op, false, 3) end
  if opts.companions then
    companions = {}
    for i, k in pairs(opts.companions) do companions[i] = root .. common.check_key(k, op, false, 3) end
  end
  -- more threads than cores: reads that miss the page cache wait on the disk
  local sub = { files = true, companions = companions, max_bytes = math.min(self.max_bytes, 1024 * 1024), threads = 8 }
  for k, v in pairs(opts) do if k ~= "companions" then sub[k] = v end end
  return paths, sub
end

function File:load_into_cache(cache, list, opts)
  local paths, sub = load_args(self, list, opts, "load_into_cache")
  return cache:add_many(paths, sub)
end

--- start_load_into_cache(cache, keys, opts) -> batch: cache:add_many_start,
-- so the files are read and parsed on the core's threads until
-- batch:finish() (-> r, as load_into_cache) adds them.
function File:start_load_into_cache(cache, list, opts)
  local paths, sub = load_args(self, list, opts, "start_load_into_cache")
  return cache:add_many_start(paths, sub)
end

--- start_load_certificates(cache, issuer_key, names, opts) -> batch: as
-- start_load_into_cache over keys.cert_files(issuer_key, names, opts.keys),
-- with the paths built by the core from the names (cache:add_many_start's
-- site_dir), and the parse threads reading relative to that folder.
function File:start_load_certificates(cache, issuer_key, names, opts)
  if type(names) ~= "table" then error("storage start_load_certificates: names must be a list", 2) end
  local sub = { files = true, site_dir = self.root .. "/" .. keys.certs_prefix(issuer_key),
    site_keys = opts.keys and true or false, max_bytes = math.min(self.max_bytes, 1024 * 1024), threads = 8 }
  for k, v in pairs(opts) do if k ~= "keys" then sub[k] = v end end
  return cache:add_many_start(names, sub)
end

-- ---- locks ---------------------------------------------------------------

-- One blocking file call of core's (write_atomic, create_exclusive, remove):
-- from a loop task on a worker thread (core.file_job: the loop goes on while
-- it fsyncs), elsewhere here.  The lock files' fsyncs were most of what an
-- obtain still did on the loop thread.
local function file_call(op, path, data, mode)
  if loop.in_task() and coroutine.isyieldable() then
    local ok, err, code = loop.work(core.file_job(op, path, data, mode))
    return ok, err, code
  end
  local ok, err, code = core[op](path, data, mode)
  return ok, err, code
end

-- The current lock record at lock key lk: text, record (nil if unreadable)
-- | nil, err, code ("ENOENT" when there is none).
function File:read_lock(lk)
  local text, err, code = core.read_file(self:path(lk), 64 * 1024)
  if not text then return nil, err, code end
  return text, common.decode_lock(text)
end

local function token_key(lk)
  return (lk:gsub("%.lock$", ".token"))
end

-- The last token granted for lk: integer (0 if none yet) | nil, err, code.
-- A token file that reads but does not parse (edited, or damaged on disk)
-- must not stop every renewal of that name for good: the count goes on from
-- the time in milliseconds, above any count one lock reaches by its grants
-- (warned; only a clock set back past an earlier such repair could make it
-- smaller). A file that cannot be read at all still refuses the grant.
function File:last_token(lk)
  local tk = token_key(lk)
  local text, err, code = core.read_file(self:path(tk), 64 * 1024)
  if not text then
    if code == "ENOENT" then return 0 end
    return nil, err, code
  end
  local rec = core.json_decode(text, 64 * 1024)
  if type(rec) ~= "table" or math.type(rec.token) ~= "integer" or rec.token < 0 then
    local floor = math.floor(core.now() * 1000)
    core.log("warn", "lock_token_unreadable", { key = tk, storage = self:describe(), restart_at = floor })
    return floor
  end
  return rec.token
end

-- We hold lk's lock file (made with grant): take the next token and record
-- it, then check that the lock file is still ours (a pause past stale_after
-- could have let another instance take it over meanwhile).
function File:grant(lk, name, grant)
  local last, err, code = self:last_token(lk)
  local token
  if last then
    token = last + 1
    local ok
    ok, err, code = file_call("write_atomic", self:path(token_key(lk)), assert(core.json_encode {
      token = token, owner = self.owner, grant = grant, granted = rfc3339.format(core.now()),
    }) .. "\n", LOCK_FILE_MODE)
    if ok then
      local _, rec = self:read_lock(lk)
      if rec and rec.owner == self.owner and rec.grant == grant then return true, token end
      return false, rec and rec.owner or "another instance"
    end
  end
  self:_release(lk, grant)
  return nil, string.format("lock %s: cannot record its token: %s", name, err), code
end

-- One attempt at taking lock key lk (see common.lua for the results).
function File:_acquire(lk, name, grant) return self:acquire_file(lk, name, grant, true) end

-- The same without the token file (try_lock{fence = false}: a lock that never
-- fences a commit, as for staple fetches, needs no fsynced token write).
function File:_acquire_unfenced(lk, name, grant) return self:acquire_file(lk, name, grant, false) end

-- The lock file itself; with_token: record the grant's token (File:grant).
function File:acquire_file(lk, name, grant, with_token)
  local now = core.now()
  local body = common.encode_lock(self.owner, now, now, grant)
  local ok, err, code = self:refuse_symlinks(lk, "lock")
  if not ok then return nil, err, code end
  ok, err, code = core.mkdir_p(self:path(parent_of(lk)), self.dir_mode)
  if not ok then return nil, err, code end
  for _ = 1, 8 do -- a lock released or taken over between two steps: try again
    ok, err, code = file_call("create_exclusive", self:path(lk), body, LOCK_FILE_MODE)
    if ok then
      self.unreadable[lk] = nil
      staleness.forget(self.seen_locks, lk) -- released meanwhile: what we saw of it is history
      if not with_token then return true end
      return self:grant(lk, name, grant)
    end
    if code ~= "EEXIST" then return nil, err, code end
    local text, rec, rcode = self:read_lock(lk)
    if text then
      local stale, holder, why
      if rec then
        self.unreadable[lk] = nil
        holder = rec.owner == self.owner and rec.owner .. " (this instance)" or rec.owner
        if rec.owner ~= self.owner then
          if common.owner_dead(rec.owner) then stale, why = true, "owner_dead"
          else stale, why = staleness.judge(self.seen_locks, lk, text, rec, now, self.stale_after) end
        end
      else
        -- Empty or garbled (a writer without our atomic create, or a torn
        -- disk): stale once it has stayed unreadable for stale_after.
        self.unreadable[lk] = self.unreadable[lk] or core.elapsed()
        holder = "an unreadable lock file"
        stale = core.elapsed() - self.unreadable[lk] > self.stale_after
        why = "unreadable"
      end
      if not stale then return false, holder end
      ok, err, code = core.replace_if_unchanged(self:path(lk), text, body, LOCK_FILE_MODE)
      if ok then
        self.unreadable[lk] = nil
        staleness.forget(self.seen_locks, lk)
        core.log("warn", "lock_taken_over", { lock = name, stale_owner = rec and rec.owner or "?",
          reason = why, storage = self:describe() })
        if not with_token then return true end
        return self:grant(lk, name, grant)
      end
      if code ~= "changed" and code ~= "ENOENT" and code ~= "EEXIST" then return nil, err, code end
    elseif rcode ~= "ENOENT" then
      return nil, rec, rcode
    end
  end
  return false, "another instance (the lock changed hands repeatedly)"
end

function File:_release(lk, grant)
  local text, rec, code = self:read_lock(lk)
  if not text then
    if code == "ENOENT" then return "none" end
    return nil, rec, code
  end
  if not rec then return false, "an unreadable lock file" end
  if rec.owner ~= self.owner then return false, rec.owner end
  if grant ~= nil and rec.grant ~= grant then return false, rec.owner .. " (another grant)" end
  local ok, err, rcode = file_call("remove", self:path(lk))
  if not ok and rcode ~= "ENOENT" then return nil, err, rcode end
  return true
end

function File:_refresh(lock, now)
  local text, rec, code = self:read_lock(lock.key)
  if not text and code ~= "ENOENT" then return nil, rec end
  if text and rec and rec.owner == self.owner and rec.grant == lock.grant then
    -- here, not on a worker: a release while it waited could be undone by
    -- this write, leaving a lock file nobody holds
    local ok, err = core.write_atomic(self:path(lock.key),
      common.encode_lock(self.owner, rec.created, now, lock.grant), LOCK_FILE_MODE)
    if not ok then return nil, err end
    return true
  end
  return false, rec and rec.owner or (text and "an unreadable lock file") or nil
end

function File:_holds(lock)
  local text, rec, code = self:read_lock(lock.key)
  if not text then
    if code == "ENOENT" then return false, nil end
    return nil, rec, code
  end
  if rec and rec.owner == self.owner and rec.grant == lock.grant then return true end
  return false, rec and rec.owner or "an unreadable lock file"
end

-- ---- commit: the journal ---------------------------------------------------

local JOURNAL = "journal"
local MANIFEST = "manifest.json"
M.JOURNAL = JOURNAL

-- Would a value stored at key fit (no directory there, no file above)?
function File:check_target(key)
  local safe, serr, scode = self:refuse_symlinks(key, "commit")
  if not safe then return nil, serr, scode end
  local st = core.stat(self:path(key))
  if st and st.type == "directory" then
    return nil, "commit " .. key .. ": Is a directory", "EISDIR"
  end
  local dir = parent_of(key)
  while dir do
    st = core.stat(self:path(dir))
    if st then
      if st.type ~= "directory" then
        return nil, "commit " .. key .. ": " .. dir .. ": Not a directory", "ENOTDIR"
      end
      break
    end
    dir = parent_of(dir)
  end
  return true
end

-- A key a manifest may name: a valid storage key outside the journal (a
-- damaged or planted manifest must never make recovery write or delete
-- anything else, "../../etc/passwd" least of all).
local function manifest_key(key)
  if type(key) ~= "string" or not pcall(common.check_key, key, "recover") then return false end
  return key ~= JOURNAL and key:sub(1, #JOURNAL + 1) ~= JOURNAL .. "/"
end

local function decode_manifest(text)
  local m = core.json_decode(text, common.READ_MAX)
  if type(m) ~= "table" or m.version ~= 1 or type(m.put) ~= "table" or type(m.delete) ~= "table" then
    return nil
  end
  for _, p in ipairs(m.put) do
    if type(p) ~= "table" or not manifest_key(p.key) or type(p.file) ~= "string"
       or not p.file:match("^%d+$") then
      return nil
    end
  end
  for _, k in ipairs(m.delete) do
    if not manifest_key(k) then return nil end
  end
  return m
end

-- The steps after the commit point, each one safe to redo: rename each
-- staged value into place (one step each; a value already moved by an
-- earlier, interrupted run is skipped), fsync the target directories (one
-- step), each delete (one step each), remove the transaction (one step).
function File:apply(tdir, m, step)
  local dirs, order = {}, {}
  for _, p in ipairs(m.put) do
    step()
    local safe, serr, scode = self:refuse_symlinks(p.key, "commit")
    if not safe then return nil, serr, scode end
    local parent = parent_of(p.key)
    local pdir = parent and self:path(parent) or self.root
    local ok, err, code = core.mkdir_p(pdir, self.dir_mode)
    if not ok then return nil, err, code end
    ok, err, code = core.rename(self:path(tdir .. "/" .. p.file), self:path(p.key))
    if not ok and code ~= "ENOENT" then return nil, err, code end
    if not dirs[pdir] then
      dirs[pdir] = true
      order[#order + 1] = pdir
    end
  end
  step()
  for _, d in ipairs(order) do
    local ok, err, code = core.fsync_dir(d)
    if not ok then return nil, err, code end
  end
  for _, key in ipairs(m.delete) do
    step()
    local parent = parent_of(key)
    local safe, serr, scode = true, nil, nil
    if parent then safe, serr, scode = self:refuse_symlinks(parent, "commit") end
    if not safe then return nil, serr, scode end
    local ok, err, code = remove_tree(self:path(key))
    if not ok and code ~= "ENOENT" then return nil, err, code end
  end
  step()
  -- the manifest goes first (core.remove fsyncs the folder): without it
  -- what is left is an empty, abandoned transaction
  local ok, err, code = core.remove(self:path(tdir .. "/" .. MANIFEST))
  if not ok and code ~= "ENOENT" then return nil, err, code end
  ok, err, code = remove_tree(self:path(tdir))
  if not ok and code ~= "ENOENT" then return nil, err, code end
  return true
end

-- recover() with a given crash injector (commit runs it with none).
function File:recover_with(step)
  local jdir = self:path(JOURNAL)
  local ok, iter, state = pcall(lfs.dir, jdir)
  if not ok then
    -- no journal: nothing was ever pending (one failed opendir)
    if lfs.symlinkattributes(jdir, "mode") == nil then return 0, 0 end
    return nil, "recover " .. jdir .. ": " .. tostring(iter), "EIO"
  end
  -- this instance's own commits still running (on a worker) are their own
  -- to finish: left out before sorting, as each commit lists them all
  local ids = {}
  for name in iter, state do
    if name ~= "." and name ~= ".." and not self:txn_in_progress(name) then ids[#ids + 1] = name end
  end
  if #ids == 0 then return 0, 0 end
  table.sort(ids)
  local rolled, discarded = 0, 0
  for _, id in ipairs(ids) do
    local tdir = JOURNAL .. "/" .. id
    local text, err, code = core.read_file(self:path(tdir .. "/" .. MANIFEST), common.READ_MAX)
    if text then
      local m = decode_manifest(text)
      if not m then
        -- cannot tell what it meant: keep it for a human, say so
        core.log("error", "storage_journal_damaged", { txn = id, storage = self:describe() })
      else
        local aok, aerr, acode = self:apply(tdir, m, step)
        if not aok then return nil, "recover " .. id .. ": " .. tostring(aerr), acode end
        rolled = rolled + 1
        core.log("warn", "storage_txn_rolled_forward", { txn = id, storage = self:describe() })
      end
    elseif code == "ENOENT" or code == "ENOTDIR" then
      if common.txn_abandoned(self, id, core.now()) then
        step()
        local rok, rerr, rcode = remove_tree(self:path(tdir))
        if not rok and rcode ~= "ENOENT" then return nil, rerr, rcode end
        discarded = discarded + 1
      end
    else
      return nil, err, code
    end
  end
  return rolled, discarded
end

local function empty_array()
  return setmetatable({}, core.json_array_mt)
end

--- commit{put = {[key] = value}, delete = {key, ...}, fence = lock}
-- -> true | nil, err, code ("fenced": the fence is no longer the lock's
-- current grant; nothing was changed).  Steps (crash_after counts them): one
-- per put (stage the value), one for the commit point (manifest), then
-- File:apply's: one per put (rename), one (fsync directories), one per
-- delete, one (remove the transaction).
function File:commit(tx)
  if type(tx) == "table" and type(tx.put) == "table" then
    for key in pairs(tx.put) do
      if key == JOURNAL or (type(key) == "string" and key:sub(1, #JOURNAL + 1) == JOURNAL .. "/") then
        error("storage commit: " .. key .. " is inside the journal", 2)
      end
    end
  end
  -- begin_commit consumes (and checks) crash_after: the C job counts the steps
  local crash_after = self.crash_after
  local puts, deletes, step, fence = common.begin_commit(self, tx, self.file_mode,
    function(p) return self:check_target(p.key) end, 2)
  if puts == true or puts == nil then return puts, deletes, step end
  local ok, err, code
  local id = common.new_txn_id(self, core.now())
  local tdir = JOURNAL .. "/" .. id
  ok, err, code = self:refuse_symlinks(tdir, "commit")
  if not ok then return nil, err, code end
  local touched = {}
  for i, p in ipairs(puts) do touched[i] = p.key end
  for _, key in ipairs(deletes) do touched[#touched + 1] = key end
  local guard <close> = self:begin_write(touched, id)
  local m = { version = 1, id = id, owner = self.owner, created = rfc3339.format(core.now()),
    put = empty_array(), delete = empty_array() }
  if fence then m.fence = { lock = fence.key, token = fence.token, grant = fence.grant } end
  for i, p in ipairs(puts) do
    m.put[i] = { key = p.key, file = tostring(i - 1), mode = p.mode, size = #p.value }
  end
  for i, key in ipairs(deletes) do m.delete[i] = key end
  -- puts in the manifest's order: put i is staged as "<i - 1>"
  local job = core.commit_job { root = self.root, txn = id, dir_mode = self.dir_mode, puts = puts,
    deletes = deletes, crash_after = crash_after }
  guard.job = job
  ok, err, code = loop.work(job, "stage")
  if not ok then
    if code == "crash" then error("injected crash", 2) end
    return nil, err, code
  end
  -- the fence again, right before the commit point: a takeover while staging
  ok, err, code = common.check_fence(self, fence)
  if not ok then
    remove_tree(self:path(tdir))
    return nil, err, code
  end
  local committed
  ok, err, code, _, _, committed = loop.work(job, "apply", assert(core.json_encode(m)))
  if ok then return true end
  if code == "crash" then error("injected crash", 2) end
  if not committed then return nil, err, code end
  -- committed: the next recover() finishes it
  core.log("error", "storage_commit_unfinished", { txn = id, error = err, storage = self:describe() })
  return nil, "commit " .. id .. " is committed but not yet applied (recover() finishes it): "
    .. tostring(err), code
end

-- ---- writes on the worker threads ---------------------------------------------

local Guard = {}
Guard.__index = Guard

-- Released when its commit or store returns, fails, or its task is
-- cancelled (a job already running finishes on its own; its transaction is
-- then recover()'s once the job is no longer busy).
function Guard:__close()
  local self_ = self.storage
  for _, k in ipairs(self.keys) do
    if self_.writing[k] == self.cond then self_.writing[k] = nil end
  end
  self.active = false
  if self.txn and not (self.job and self.job:busy()) then self_.inflight[self.txn] = nil end
  self.cond:notify_all()
end

--- begin_write(keys [, txn]) -> guard (a to-be-closed value): wait (in a
-- task) until no other write of this instance is on any of keys, then mark
-- them; txn, if given, is this instance's transaction in progress
-- (recover() leaves it alone) until the guard is closed.
function File:begin_write(list, txn)
  if loop.in_task() and coroutine.isyieldable() then
    local i = 1
    while i <= #list do
      local c = self.writing[list[i]]
      if c then
        c:wait()
        i = 1
      else
        i = i + 1
      end
    end
  end
  local g = setmetatable({ storage = self, keys = list, cond = loop.cond(), txn = txn, active = true }, Guard)
  for _, k in ipairs(list) do self.writing[k] = g.cond end
  if txn then self.inflight[txn] = g end
  return g
end

--- Is txn a commit of this instance still running (its task, or its job)?
function File:txn_in_progress(txn)
  local g = self.inflight[txn]
  if not g then return false end
  if g.active or (g.job and g.job:busy()) then return true end
  self.inflight[txn] = nil
  return false
end

return M
