--- certmaint.storage.common: what the storage backends share — key checks,
-- lock records (certmagic's lock file format), and the whole lock life cycle
-- (waiting, tokens, refresh, release, fencing) and commit's argument checks
-- and crash injection, over a few small per-backend primitives.  Not a
-- backend; backends require it.
--
-- A backend provides (lk is a lock key "locks/<safe name>.lock"; lock is a
-- lock object, see new_lock):
--   backend:_acquire(lk, name, grant) -> true, token   granted: the backend
--            recorded grant (a unique string) as the holder of lk and took
--            token = (the last token granted for lk) + 1, persisting it
--        -> false, holder      busy (held by holder, not stale)
--        -> nil, err, code     failed
--   backend:_release(lk, grant) -> true | "none" | false, holder | nil, err, code
--            remove lk's lock if it is this instance's (and, when grant is
--            not nil, that grant's): true; "none" when there is no lock at
--            all; false when it is somebody else's
--   backend:_refresh(lock, now) -> true (still ours, updated) | false, holder
--            (lost) | nil, err (cannot tell: keep it, try at the next beat)
--   backend:_holds(lock) -> true | false, holder | nil, err, code
--            does storage still record this grant as lk's holder?
-- and the fields owner, poll_interval, held = {} (lock key -> lock object).
-- Optional: backend:_acquire_unfenced(lk, name, grant) -> true | as _acquire,
--            a grant that records no token (try_lock{fence = false}).
local core = require "certmaint.core"
local failpoint = require "certmaint.failpoint"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

--- certmagic refreshes a lock every 5 s and calls it stale after 2 x 5 s.
M.HEARTBEAT_INTERVAL = 5
M.STALE_AFTER = 10
M.POLL_INTERVAL = 1

--- Seconds between refresh_locks for a backend whose held locks can be taken
-- (stale, or their lease expired) after `limit` seconds: the usual 5 s, or
-- half the limit when that is shorter, so a held lock gets two beats before
-- anyone may take it, as certmagic's 5 s in 10 s (the engine reads
-- backend.heartbeat_interval).
function M.heartbeat_for(limit) return math.min(M.HEARTBEAT_INTERVAL, limit / 2) end

--- A schema check (options.check) for durations that must be positive.
function M.more_than_zero(v) return v > 0, "must be more than 0 seconds" end
M.READ_MAX = 16 * 1024 * 1024 -- bound on one value: certificates, keys, staples
M.KEY_MAX = 1024

--- Check a storage key: "/"-separated, no leading or trailing "/", no empty,
-- "." or ".." component, no NUL or backslash.  A bad key is a caller's bug:
-- raises.  allow_root lets "" through (list/exists of the whole tree).
-- Uses find() without captures only, so checking 100,000 keys makes no
-- garbage (load_many on the start-up path).
local SLASH, DOT = 47, 46
function M.check_key(key, what, allow_root, level)
  if type(key) ~= "string" then
    error(string.format("storage %s: key must be a string, not %s", what, type(key)),
      (level or 2) + 1)
  end
  local n = #key
  if n == 0 then
    if allow_root then return key end
    error(string.format("storage %s: empty key", what), (level or 2) + 1)
  end
  if n > M.KEY_MAX then
    error(string.format("storage %s: key longer than %d bytes", what, M.KEY_MAX), (level or 2) + 1)
  end
  if key:find("\0", 1, true) or key:find("\\", 1, true) then
    error(string.format("storage %s: key %q contains NUL or '\\'", what, key), (level or 2) + 1)
  end
  if key:byte(1) == SLASH or key:byte(n) == SLASH then
    error(string.format("storage %s: key %q must not start or end with '/'", what, key),
      (level or 2) + 1)
  end
  -- plain finds first (a pattern tried at every position costs ~3 us a key);
  -- a "." or ".." component starts the key or follows a "/"
  if key:find("//", 1, true) or ((key:byte(1) == DOT or key:find("/.", 1, true)) and
     (key:find("^%.%.?/") or key:find("/%.%.?/") or key:find("/%.%.?$") or key == "." or key == "..")) then
    error(string.format("storage %s: key %q has an empty, '.' or '..' component", what, key),
      (level or 2) + 1)
  end
  return key
end

--- The storage key of a lock: a lock name ("issue_cert_example.com") maps to
-- certmagic's file "locks/<safe name>.lock"; a name that already is such a
-- key (keys.lock()) is used as it is.
function M.lock_key(name, level)
  if type(name) ~= "string" or name == "" then
    error("storage lock: the lock name must be a non-empty string", (level or 2) + 1)
  end
  if name:match("^locks/[^/]+%.lock$") and M.check_key(name, "lock", false, (level or 2) + 1) then
    return name
  end
  return keys.lock_file(name)
end

--- Private keys are written 0600 whatever the options say: site keys
-- ("*.key") and anything with "key" in its name under an ACME users folder.
function M.is_private(key)
  if key:match("%.key$") then return true end
  local user_file = key:match("^acme/[^/]+/users/.+/([^/]+)$")
  return user_file ~= nil and user_file:lower():find("key", 1, true) ~= nil
end

local function octal(v)
  return type(v) == "string" and v:match("^0?[0-7][0-7][0-7]$") ~= nil
end
M.is_octal_mode = octal

--- The permission bits for store(key, value, opts): opts.mode (an octal
-- string) or default; private keys are always "0600" (asking for anything
-- else raises).  Raises on a bad option table: those are caller bugs.
function M.store_mode(key, opts, default, level)
  level = (level or 2) + 1
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("storage store: options must be a table", level) end
  for k in pairs(opts) do
    if k ~= "mode" then
      error(string.format("storage store: unknown option %q (known: mode)", tostring(k)), level)
    end
  end
  if opts.mode ~= nil and not octal(opts.mode) then
    error("storage store: mode must be an octal string like \"0600\"", level)
  end
  if M.is_private(key) then
    if opts.mode and tonumber(opts.mode, 8) ~= 384 then
      error(string.format("storage store: %s is a private key and is always written 0600", key),
        level)
    end
    return "0600"
  end
  return opts.mode or default
end

-- ---- lock records -----------------------------------------------------------

--- A unique owner id for one backend instance: "host:pid:random".
function M.new_owner()
  local rnd = assert(core.random_bytes(6))
  return string.format("%s:%d:%s", core.hostname(), core.getpid(),
    (rnd:gsub(".", function(c) return string.format("%02x", c:byte()) end)))
end

--- The JSON text of a lock file, readable by certmagic (created/updated are
-- RFC 3339; owner and grant are ours and ignored by Caddy).  grant (optional)
-- names one grant of the lock: what a fenced commit checks.
function M.encode_lock(owner, created, updated, grant)
  return assert(core.json_encode {
    created = rfc3339.format(created),
    updated = rfc3339.format(updated),
    owner = owner,
    grant = grant,
  }) .. "\n"
end

--- Parse a lock file's text -> {owner=, created=, updated=, grant=} (times as
-- Unix seconds; owner "unknown" and grant nil for Caddy's locks), or nil when
-- unreadable.
function M.decode_lock(text)
  local rec = text and core.json_decode(text, 64 * 1024)
  if type(rec) ~= "table" then return nil end
  local created, updated = rfc3339.parse(rec.created), rfc3339.parse(rec.updated)
  if not created and not updated then return nil end
  return {
    owner = type(rec.owner) == "string" and rec.owner or "unknown",
    created = created or updated,
    updated = updated or created,
    grant = type(rec.grant) == "string" and rec.grant or nil,
  }
end

--- Is the lock owner `owner` ("host:pid:random") a process of this host that
-- no longer exists? Then its lock can be taken over at once instead of after
-- stale_after (a restart after kill -9 waits for nobody). Never for this
-- process's own pid: another backend instance in this process (a policy
-- reloaded on SIGHUP) is alive. A pid reused since makes the answer "alive",
-- which only means waiting stale_after as for any other owner.
function M.owner_dead(owner)
  local host, pid = tostring(owner):match("^(.+):(%d+):%x+$")
  pid = tonumber(pid)
  if not host or host ~= core.hostname() or not pid or pid == core.getpid() then return false end
  return not core.pid_alive(pid)
end

--- A lock last refreshed at `updated` is stale at `now` (certmagic: the
-- heartbeat stopped for more than two intervals).
function M.is_stale(updated, now, stale_after)
  return now - updated > stale_after
end

-- ---- waiting for a lock ----------------------------------------------------

--- The loop module when running inside one of its tasks, else nil.  Outside a
-- coroutine there is no task, and the loop is not even loaded.
local function task_loop()
  if not coroutine.isyieldable() then return nil end
  local loop = package.loaded["certmaint.loop"]
  if loop == nil then
    local ok, mod = pcall(require, "certmaint.loop")
    if not ok then
      if tostring(mod):find("module 'certmaint.loop' not found", 1, true) then return nil end
      error(mod, 0)
    end
    loop = mod
  end
  if type(loop) == "table" and loop.in_task and loop.in_task() then return loop end
  return nil
end

local LOCK_OPTIONS = { timeout = true }

--- Check lock()'s option table: {timeout = seconds} or nil.
function M.lock_options(opts, level)
  level = (level or 2) + 1
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("storage lock: options must be a table", level) end
  for k in pairs(opts) do
    if not LOCK_OPTIONS[k] then
      error(string.format("storage lock: unknown option %q (known: timeout)", tostring(k)), level)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout < 0) then
    error("storage lock: timeout must be a number of seconds >= 0", level)
  end
  return opts
end

-- ---- the lock life cycle (shared by every backend) ---------------------

--- A fresh grant id: names one grant of one lock (lock files and fenced
-- commits compare it).  16 hex digits.
function M.new_grant()
  local rnd = assert(core.random_bytes(8))
  return (rnd:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- The lock object lock() and try_lock() return: name (as asked), key (the
-- lock key), token (fencing token: an integer, larger for every grant of this
-- lock across instances and restarts), grant (unique id of this grant),
-- owner (this instance), acquired (core.now()).
local function new_lock(backend, name, lk, token, grant)
  return { name = name, key = lk, token = token, grant = grant, owner = backend.owner,
    acquired = core.now() }
end

--- Is v a lock object (what lock/try_lock return)?
function M.is_lock(v)
  return type(v) == "table" and type(v.key) == "string" and type(v.grant) == "string"
    and math.type(v.token) == "integer"
end

-- unfenced: the caller will never fence a commit with this lock, so a
-- backend whose tokens cost a write (file: an fsynced token file a lock
-- name) may skip them (its optional _acquire_unfenced); the lock's token is 0.
local function one_attempt(backend, name, lk, unfenced)
  local grant = M.new_grant()
  local ok, token, code
  if unfenced and backend._acquire_unfenced then
    ok, token, code = failpoint.call("lock.acquire", backend._acquire_unfenced, backend, lk, name, grant)
    if ok then token = 0 end
  else
    ok, token, code = failpoint.call("lock.acquire", backend._acquire, backend, lk, name, grant)
  end
  if ok then
    local lock = new_lock(backend, name, lk, token, grant)
    lock.unfenced = unfenced or nil
    backend.held[lk] = lock
    return lock
  end
  return ok, token, code
end

--- backend:lock(name [, opts]) for every backend: one attempt after another
-- until granted.  Inside a loop task a busy lock is polled every
-- backend.poll_interval seconds (loop.sleep: other tasks run) until granted
-- or opts.timeout passes ("timeout"); outside a task it fails at once with
-- "locked", since blocking would stall everything.
-- -> lock | nil, err, "locked"|"timeout"|code
function M.lock(backend, name, opts)
  local lk = M.lock_key(name, 3)
  opts = M.lock_options(opts, 3)
  local deadline = opts.timeout and core.now() + opts.timeout
  while true do
    local lock, holder, code = one_attempt(backend, name, lk)
    if lock then return lock end
    if lock == nil then return nil, holder, code end
    local loop = task_loop()
    if not loop then
      return nil, string.format("lock %s is held by %s", name, holder), "locked"
    end
    local now = core.now()
    if deadline and now >= deadline then
      return nil, string.format("lock %s: gave up after %gs, held by %s", name, opts.timeout,
        holder), "timeout"
    end
    local wait = backend.poll_interval
    if deadline and deadline - now < wait then wait = deadline - now end
    loop.sleep(wait)
  end
end

--- backend:try_lock(name [, opts]): one attempt, for work that can be skipped.
-- opts.fence = false: the lock will never fence a commit (fetches another
-- instance may as well do), so the backend may skip recording a token.
-- -> lock | false, holder | nil, err, code
function M.try_lock(backend, name, opts)
  local lk = M.lock_key(name, 3)
  if opts ~= nil and type(opts) ~= "table" then error("storage try_lock: opts must be a table", 3) end
  return one_attempt(backend, name, lk, opts ~= nil and opts.fence == false)
end

--- backend:unlock(lock_or_name) -> true | nil, err, "notheld"|code.
-- A lock object releases that grant only (a lock since taken over, or
-- released and granted again, is left to its holder); a name releases this
-- instance's lock of that name.
function M.unlock(backend, what)
  local lk, grant, name
  if type(what) == "table" then
    if not M.is_lock(what) then error("storage unlock: not a lock object", 3) end
    lk, grant, name = what.key, what.grant, what.name
  else
    lk, name = M.lock_key(what, 3), what
    local held = backend.held[lk]
    grant = held and held.grant
  end
  local held = backend.held[lk]
  local was_held = held ~= nil and held.grant == grant
  if was_held or grant == nil then backend.held[lk] = nil end
  if grant ~= nil and not was_held then
    return nil, string.format("unlock %s: this grant is not held by this instance", name),
      "notheld"
  end
  local ok, holder, code = failpoint.call("lock.release", backend._release, backend, lk, grant)
  if ok == nil then return nil, holder, code end
  if ok == false then
    return nil, string.format("unlock %s: held by %s, not this instance", name, holder), "notheld"
  end
  if ok == "none" and not was_held then
    return nil, string.format("unlock %s: not held by this instance", name), "notheld"
  end
  return true
end

--- backend:refresh_locks() -> refreshed, lost: the heartbeat (certmagic: every
-- 5 s).  Refreshes every lock this instance holds; lost lists the names of
-- those no longer ours (taken over after we went stale, or removed): they are
-- dropped and logged (event lock_lost).  A lock that cannot be checked (I/O
-- error) is kept and tried again at the next beat (event lock_refresh_failed).
function M.refresh_locks(backend)
  local refreshed, lost = 0, {}
  local now = core.now()
  local held = {}
  for lk, lock in pairs(backend.held) do held[#held + 1] = { lk, lock } end
  table.sort(held, function(x, y) return x[1] < y[1] end)
  for _, h in ipairs(held) do
    local lk, lock = h[1], h[2]
    local ok, holder = failpoint.call("lock.refresh", backend._refresh, backend, lock, now)
    if ok then
      refreshed = refreshed + 1
    elseif ok == nil then
      core.log("warn", "lock_refresh_failed", { lock = lock.name, error = holder,
        storage = backend:describe() })
    else
      backend.held[lk] = nil
      lock.lost = true -- the work under it can tell (engine/renew.lua: reload, not fail)
      lost[#lost + 1] = lock.name
      core.log("error", "lock_lost", { lock = lock.name, owner = holder or "none",
        storage = backend:describe() })
    end
  end
  return refreshed, lost
end

--- Check a commit's fence: nil (no fence) or a lock object still held by
-- this instance and still recorded in storage as that lock's current grant.
-- -> true | nil, err, "fenced"|code.  Raises if fence is not a lock object.
function M.check_fence(backend, fence)
  if fence == nil then return true end
  local held = backend.held[fence.key]
  if held == nil or held.grant ~= fence.grant then
    return nil, string.format("commit fenced: lock %s (token %d) is no longer held by this "
      .. "instance", fence.name, fence.token), "fenced"
  end
  local ok, holder, code = backend:_holds(fence)
  if ok == nil then return nil, holder, code end
  if not ok then
    return nil, string.format("commit fenced: lock %s (token %d) was granted again, now held "
      .. "by %s", fence.name, fence.token, holder or "nobody"), "fenced"
  end
  return true
end

-- ---- commit ------------------------------------------------------------------

local COMMIT_FIELDS = { put = true, delete = true, fence = true }

--- Check commit{put=, delete=, fence=} -> puts, deletes, fence, where puts is
-- a list of {key=, value=, mode=} sorted by key (modes by store_mode with
-- default_mode: private keys 0600) and deletes a sorted list of keys.  Every
-- mistake raises (unknown field, bad key, non-string value, a key both put
-- and deleted, a fence that is not a lock object).
function M.check_commit(tx, default_mode, level)
  level = (level or 2) + 1
  if type(tx) ~= "table" then error("storage commit: argument must be a table", level) end
  for k in pairs(tx) do
    if not COMMIT_FIELDS[k] then
      error(string.format("storage commit: unknown field %q (known: put, delete, fence)",
        tostring(k)), level)
    end
  end
  if tx.put ~= nil and type(tx.put) ~= "table" then
    error("storage commit: put must be a table {[key] = value}", level)
  end
  if tx.delete ~= nil and type(tx.delete) ~= "table" then
    error("storage commit: delete must be a list of keys", level)
  end
  if tx.fence ~= nil and not M.is_lock(tx.fence) then
    error("storage commit: fence must be a lock object (from lock or try_lock)", level)
  end
  if tx.fence ~= nil and tx.fence.unfenced then
    error(string.format("storage commit: lock %s was taken with try_lock{fence = false} and cannot fence a commit",
      tostring(tx.fence.name)), level)
  end
  local puts, deletes, seen = {}, {}, {}
  for key, value in pairs(tx.put or {}) do
    M.check_key(key, "commit", false, level)
    if type(value) ~= "string" then
      error(string.format("storage commit: the value of %s must be a string, not %s", key,
        type(value)), level)
    end
    puts[#puts + 1] = { key = key, value = value, mode = M.store_mode(key, nil, default_mode, level) }
    seen[key] = true
  end
  local n = #(tx.delete or {})
  for i, key in pairs(tx.delete or {}) do
    if math.type(i) ~= "integer" or i < 1 or i > n then
      error("storage commit: delete must be a list of keys", level)
    end
    M.check_key(key, "commit", false, level)
    if seen[key] then
      error(string.format("storage commit: %s is both put and deleted", key), level)
    end
    deletes[#deletes + 1] = key
  end
  table.sort(puts, function(x, y) return x.key < y.key end)
  table.sort(deletes)
  return puts, deletes, tx.fence
end

--- The crash injection of commit and recover (specs only): take
-- backend.crash_after (consumed: it applies to the next commit or recover
-- only) and return step(), which a backend calls BEFORE each internal step;
-- it raises error("injected crash") once crash_after steps are done.  With
-- crash_after = 0 nothing is done; with crash_after >= the number of steps,
-- nothing is injected.
function M.crash_injector(backend)
  local n = backend.crash_after
  if n == nil then return function() end end
  backend.crash_after = nil
  if math.type(n) ~= "integer" or n < 0 then
    error("storage: crash_after must be an integer >= 0", 3)
  end
  local done = 0
  return function()
    if done >= n then error("injected crash", 2) end
    done = done + 1
  end
end

--- A fresh transaction id: "<created ms>-<owner hash 8>-<random 8>", sortable
-- by creation and naming its owner, so recover() can tell another live
-- instance's transaction in progress (young, not ours) from a dead one.
function M.new_txn_id(backend, now)
  local rnd = assert(core.random_bytes(4))
  return string.format("%013d-%s-%s", math.floor(now * 1000),
    core.sha256_hex(backend.owner):sub(1, 8),
    (rnd:gsub(".", function(c) return string.format("%02x", c:byte()) end)))
end

--- Parse a transaction id -> created (seconds), owner hash | nil.
function M.parse_txn_id(id)
  local ms, owner = id:match("^(%d+)%-(%x+)%-%x+$")
  if not ms then return nil end
  return tonumber(ms) / 1000, owner
end

--- May recover() discard the uncommitted transaction id?  Yes if it is ours
-- (a backend whose commits overlap skips its own ones still in progress
-- before asking: the file backend's inflight set) or
-- older than stale_after (its instance died, or is paused so long its locks
-- went stale anyway); no while another live instance may still be staging it.
function M.txn_abandoned(backend, id, now)
  local created, owner = M.parse_txn_id(id)
  if not created then return true end
  if owner == core.sha256_hex(backend.owner):sub(1, 8) then return true end
  return now - created > backend.stale_after
end

-- ---- bulk load into a certificate cache -----------------------------------

--- backend:load_into_cache(cache, keys, opts) for any backend: the stored PEM
-- chains at keys go into cache (cache:add_many) -> r, as add_many returns it,
-- with r.state[i] == "missing" where keys[i] is not stored. opts are
-- add_many's, plus companions = {key, ...}: keys that must exist beside each
-- certificate (its private key), missing gives "error" with code "ENOENT".
-- The file backend does the same in one C call whose threads also read.
function M.load_into_cache(backend, cache, list, opts)
  local want, n = {}, #list
  local companions = opts.companions
  for i = 1, n do
    want[#want + 1] = list[i]
    if companions and companions[i] then want[#want + 1] = companions[i] end
  end
  local found, failed = backend:load_many(want)
  local pems, at = {}, {}
  local missing, errs = {}, {}
  for i = 1, n do
    local k = list[i]
    local c = companions and companions[i]
    if not found[k] then
      local f = failed[k] or { message = k .. ": not read", code = "EIO" }
      if f.code == "ENOENT" then missing[i] = f else errs[i] = f end
    elseif c and not found[c] then
      local f = failed[c] or { message = c .. ": not read", code = "EIO" }
      errs[i] = { message = c .. ": " .. tostring(f.message), code = f.code }
    else
      pems[#pems + 1], at[#pems + 1] = found[k], i
    end
  end
  local sub = {}
  for key, v in pairs(opts) do if key ~= "companions" then sub[key] = v end end
  if opts.names or opts.on_demand then
    local names, on_demand = opts.names and {}, opts.on_demand and {}
    for j, i in ipairs(at) do
      if names then names[j] = opts.names[i] end
      if on_demand then on_demand[j] = opts.on_demand[i] end
    end
    sub.names, sub.on_demand = names, on_demand
  end
  local r = cache:add_many(pems, sub)
  local out = { id = {}, state = {}, error = {}, code = {}, not_before = {}, not_after = {}, renew_at = {} }
  for j, i in ipairs(at) do
    for field, arr in pairs(out) do arr[i] = r[field][j] end
    -- add_many numbered it among pems: say "item i" as the file backend does
    if out.error[i] then out.error[i] = out.error[i]:gsub("^item %d+: ", "item " .. i .. ": ", 1) end
  end
  for i, f in pairs(missing) do
    out.state[i], out.error[i], out.code[i] = "missing", "item " .. i .. ": " .. f.message, "ENOENT"
  end
  for i, f in pairs(errs) do
    out.state[i], out.error[i], out.code[i] = "error", "item " .. i .. ": " .. f.message, f.code
  end
  return out
end

-- A started load that does its work when finished (what
-- start_load_into_cache gives for a backend that cannot work ahead).
local Deferred = {}
Deferred.__index = Deferred
Deferred.__close = function(b) b:drop() end

function Deferred:finish()
  if self.finished then error("storage batch: finished already", 2) end
  if self.dropped then error("storage batch: dropped", 2) end
  self.finished = true
  return self.backend:load_into_cache(self.cache, self.list, self.opts)
end

function Deferred:drop() self.dropped = not self.finished end

--- backend:start_load_into_cache(cache, keys, opts) for any backend -> a batch
-- whose finish() is load_into_cache(cache, keys, opts) (run then).
function M.start_load_into_cache(backend, cache, list, opts)
  if type(list) ~= "table" then error("storage start_load_into_cache: keys must be a list", 3) end
  -- a malformed key raises here, as the file backend's does
  for i = 1, #list do M.check_key(list[i], "start_load_into_cache", false, 3) end
  for _, k in pairs(opts.companions or {}) do M.check_key(k, "start_load_into_cache", false, 3) end
  return setmetatable({ backend = backend, cache = cache, list = list, opts = opts }, Deferred)
end

--- backend:start_load_certificates(cache, issuer_key, names, opts) when the
-- backend has one, else start_load_into_cache (the backend's, or the generic
-- one) over the sets' keys (keys.cert_files): the engine's start-up batches.
-- opts are add_many's plus keys = true (each set's private key must exist).
function M.start_load_certificates(backend, cache, issuer_key, names, opts)
  if backend.start_load_certificates then
    return backend:start_load_certificates(cache, issuer_key, names, opts)
  end
  local crts, key_files = require("certmaint.keys").cert_files(issuer_key, names, opts.keys)
  local o = {}
  for k, v in pairs(opts) do if k ~= "keys" then o[k] = v end end
  o.companions = key_files
  if backend.start_load_into_cache then return backend:start_load_into_cache(cache, crts, o) end
  return M.start_load_into_cache(backend, cache, crts, o)
end

--- The first steps of every backend's commit: check the arguments (raising
-- on a caller's bug), finish what a crash left (this commit lands after
-- it), check the fence, and each target. Returns puts, deletes, step
-- (the crash injector) | true when there is nothing to write | nil, err, code.
-- check_target(key, put) is the backend's own refusal of a target.
function M.begin_commit(backend, tx, default_mode, check_target, level)
  local puts, deletes, fence = M.check_commit(tx, default_mode, (level or 2) + 1)
  local step = M.crash_injector(backend)
  local ok, err, code = backend:recover_with(function() end)
  if not ok then return nil, err, code end
  ok, err, code = M.check_fence(backend, fence)
  if not ok then return nil, err, code end
  if #puts == 0 and #deletes == 0 then return true end
  for _, p in ipairs(puts) do
    ok, err, code = check_target(p)
    if not ok then return nil, err, code end
  end
  return puts, deletes, step, fence
end

-- ---- the methods every backend shares ---------------------------------------

--- Install on a backend class the contract methods that are the same for
-- every backend, over its primitives (_acquire, _release, _refresh, _holds,
-- recover_with, load_many): lock, try_lock, unlock, refresh_locks, recover,
-- load_into_cache, start_load_into_cache. A backend may define its own after this (the file backend
-- has its own load_into_cache). Each wrapper keeps one frame of its own, so
-- error levels count it as the backend's method (no tail calls).
function M.install(class)
  function class:lock(name, opts)
    local lock, err, code = M.lock(self, name, opts)
    return lock, err, code
  end
  function class:try_lock(name, opts)
    local lock, err, code = M.try_lock(self, name, opts)
    return lock, err, code
  end
  function class:unlock(what)
    local ok, err, code = M.unlock(self, what)
    return ok, err, code
  end
  function class:refresh_locks()
    local refreshed, lost = M.refresh_locks(self)
    return refreshed, lost
  end
  function class:recover()
    local rolled, discarded, code = self:recover_with(M.crash_injector(self))
    if not rolled then return nil, discarded, code end
    return rolled, discarded
  end
  function class:load_into_cache(cache, list, opts)
    local r = M.load_into_cache(self, cache, list, opts)
    return r
  end
  function class:start_load_into_cache(cache, list, opts)
    local b = M.start_load_into_cache(self, cache, list, opts)
    return b
  end
  return class
end

return M
