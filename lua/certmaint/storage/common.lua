--- certmaint.storage.common: what the storage backends share — key checks,
-- lock records (certmagic's lock file format), RFC 3339 times and the
-- lock-waiting loop.  Not a backend; backends require it.
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local M = {}

--- certmagic refreshes a lock every 5 s and calls it stale after 2 x 5 s.
M.HEARTBEAT_INTERVAL = 5
M.STALE_AFTER = 10
M.POLL_INTERVAL = 1
M.READ_MAX = 16 * 1024 * 1024 -- bound on one value: certificates, keys, staples
M.KEY_MAX = 1024

--- Check a storage key: "/"-separated, no leading or trailing "/", no empty,
-- "." or ".." component, no NUL or backslash.  A bad key is a caller's bug:
-- raises.  allow_root lets "" through (list/exists of the whole tree).
function M.check_key(key, what, allow_root, level)
  level = (level or 2) + 1
  if type(key) ~= "string" then
    error(string.format("storage %s: key must be a string, not %s", what, type(key)), level)
  end
  if key == "" then
    if allow_root then return key end
    error(string.format("storage %s: empty key", what), level)
  end
  if #key > M.KEY_MAX then
    error(string.format("storage %s: key longer than %d bytes", what, M.KEY_MAX), level)
  end
  if key:find("[%z\\]") then
    error(string.format("storage %s: key %q contains NUL or '\\'", what, key), level)
  end
  if key:sub(1, 1) == "/" or key:sub(-1) == "/" then
    error(string.format("storage %s: key %q must not start or end with '/'", what, key), level)
  end
  for part in (key .. "/"):gmatch("([^/]*)/") do
    if part == "" or part == "." or part == ".." then
      error(string.format("storage %s: key %q has an empty, '.' or '..' component", what, key),
        level)
    end
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

-- ---- RFC 3339 times (Go's time.Time in JSON) -------------------------------

local function days_from_civil(y, m, d)
  -- Howard Hinnant's algorithm: days since 1970-01-01 in the proleptic
  -- Gregorian calendar, exact for every year.
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Unix seconds -> "2024-05-01T10:00:00.123456789Z" (UTC, up to nanoseconds,
-- trailing zeros dropped: Go's RFC3339Nano).
function M.format_time(t)
  local sec = math.floor(t)
  local ns = math.floor((t - sec) * 1e9 + 0.5)
  if ns >= 1000000000 then sec, ns = sec + 1, 0 end
  local frac = ""
  if ns > 0 then frac = ("." .. string.format("%09d", ns)):gsub("0+$", "") end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. frac .. "Z"
end

--- RFC 3339 text -> Unix seconds (number), or nil if it is not one.
function M.parse_time(s)
  if type(s) ~= "string" or #s > 64 then return nil end
  local y, mo, d, h, mi, se, frac, zone =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  if frac ~= "" and not frac:match("^%.%d+$") then return nil end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi),
    tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  local offset
  if zone == "Z" or zone == "z" then
    offset = 0
  else
    local sign, oh, om = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then offset = -offset end
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  return t
end

-- ---- lock records -----------------------------------------------------------

--- A unique owner id for one backend instance: "host:pid:random".
function M.new_owner()
  local rnd = assert(core.random_bytes(6))
  return string.format("%s:%d:%s", core.hostname(), core.getpid(),
    (rnd:gsub(".", function(c) return string.format("%02x", c:byte()) end)))
end

--- The JSON text of a lock file, readable by certmagic (created/updated are
-- RFC 3339; owner is ours and ignored by Caddy).
function M.encode_lock(owner, created, updated)
  return assert(core.json_encode {
    created = M.format_time(created),
    updated = M.format_time(updated),
    owner = owner,
  }) .. "\n"
end

--- Parse a lock file's text -> {owner=, created=, updated=} (times as Unix
-- seconds; owner "unknown" for Caddy's locks), or nil when unreadable.
function M.decode_lock(text)
  local rec = text and core.json_decode(text, 64 * 1024)
  if type(rec) ~= "table" then return nil end
  local created, updated = M.parse_time(rec.created), M.parse_time(rec.updated)
  if not created and not updated then return nil end
  return {
    owner = type(rec.owner) == "string" and rec.owner or "unknown",
    created = created or updated,
    updated = updated or created,
  }
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

--- Acquire a lock by calling try() until it succeeds:
--   try() -> true                   acquired
--         -> false, holder          busy (held by holder, not stale)
--         -> nil, err, code         failed
-- Inside a loop task a busy lock is polled every poll_interval seconds (loop
-- sleep, other tasks run) until acquired or opts.timeout passes; outside a
-- task it fails at once with "locked", since blocking would stall everything.
function M.acquire(name, opts, poll_interval, try)
  local deadline = opts.timeout and core.now() + opts.timeout
  while true do
    local ok, holder, code = try()
    if ok then return true end
    if ok == nil then return nil, holder, code end
    local loop = task_loop()
    if not loop then
      return nil, string.format("lock %s is held by %s", name, holder), "locked"
    end
    local now = core.now()
    if deadline and now >= deadline then
      return nil, string.format("lock %s: gave up after %gs, held by %s", name, opts.timeout,
        holder), "timeout"
    end
    local wait = poll_interval
    if deadline and deadline - now < wait then wait = deadline - now end
    loop.sleep(wait)
  end
end

--- backend:lock(name [, opts]) for any backend with try_lock(name, lk),
-- poll_interval and held: wait as M.acquire does, then remember the lock so
-- refresh_locks keeps it fresh. Both backends' lock() is this.
function M.lock(backend, name, opts)
  local lk = M.lock_key(name, 3)
  opts = M.lock_options(opts, 3)
  local ok, err, code = M.acquire(name, opts, backend.poll_interval,
    function() return backend:try_lock(name, lk) end)
  if ok then backend.held[lk] = name end
  return ok, err, code
end

return M
