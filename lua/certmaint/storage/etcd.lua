--- certmaint.storage.etcd: the storage contract over etcd v3's JSON gateway
-- (POST /v3/kv/*, /v3/lease/*), through the core's HTTP client, for several
-- instances on several machines sharing one storage.
--
--   storage = certmaint.storage.etcd {
--     endpoints = { "http://10.0.0.1:2379", "http://10.0.0.2:2379" },
--     prefix = "/certmaint", lock_ttl = "30s", timeout = "10s",
--   }
--
-- Layout in etcd (keys are bytes; the gateway wants them base64):
--   <prefix>/data/<storage key>   the value, behind a one-line envelope
--                                 "certmaint:1 <modified, Unix ms>\n" (stat's
--                                 modified time travels with the value: one
--                                 put, never a second key to keep in step)
--   <prefix>/locks/<lock key>     a lock record (common.encode_lock: owner,
--                                 created, grant), bound to this instance's lease
--   <prefix>/locks/<lock key>.beat its heartbeat (updated), same lease
--
-- Directories are implied by keys, as in the memory backend: "a/b" is a
-- directory while some key "a/b/..." exists.
--
-- Locks.  Each instance holds one lease (granted with lock_ttl, kept alive by
-- refresh_locks, the engine's heartbeat: every 5 s, or lock_ttl / 2 when that
-- is shorter: heartbeat_interval); every lock it takes is bound to
-- it, so a crashed instance's locks vanish with its lease.  A grant is one
-- txn "create_revision(lock) == 0 -> put lock"; its fencing token is the
-- txn's revision, which is also the lock key's mod_revision: etcd's
-- revisions only grow, across instances and restarts.  A lock's record is
-- never rewritten while held (the heartbeat writes the .beat key), so a
-- fenced commit is ONE txn comparing mod_revision(lock) == token before all
-- its puts and deletes: a paused former holder is refused by etcd itself.
-- A lock whose heartbeat is older than stale_after (by this instance's
-- clock; default 2 x lock_ttl, so the lease normally frees it first) is
-- taken over too, as the file backend does.
--
-- Requests go to the endpoint that answered last; a connection error, a
-- timeout or a 5xx moves to the next (remembered).  When none answers the
-- error names each: "etcd http://127.0.0.1:2379: <why>", code "unavailable".
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local options = require "certmaint.options"
local common = require "certmaint.storage.common"
local failpoint = require "certmaint.failpoint"

local M = {}

local Etcd = {}
Etcd.__index = Etcd
common.install(Etcd) -- lock, try_lock, unlock, refresh_locks, recover, load_into_cache

M.PAGE = 1000        -- keys per list request: 100k keys never come in one response
M.TXN_OPS = 128      -- etcd's default --max-txn-ops
M.ENVELOPE = "certmaint:1 "

local function check_endpoint(v)
  if type(v) ~= "table" or #v == 0 then return false, "must be a non-empty list of URLs" end
  for i, e in ipairs(v) do
    if type(e) ~= "string" or not e:match("^https?://[^/]+$") then
      return false, string.format("entry %d must be a URL like \"http://127.0.0.1:2379\" "
        .. "(scheme, host and port, no path)", i)
    end
  end
  return true
end

local SCHEMA = {
  endpoints = { type = "table", required = true, check = check_endpoint },
  prefix = { type = "string", default = "/certmaint", check = function(v)
    return v:match("^/[^%z]*[^/]$") ~= nil or v == "/", "must start with '/' and not end with one"
  end },
  username = { type = "string" },
  password = { type = "string" },
  ca_file = { type = "string" },
  cert_file = { type = "string" },
  key_file = { type = "string" },
  lock_ttl = { type = "duration", default = 30, check = function(v)
    return v >= 2 and math.floor(v) == v, "must be a whole number of seconds, at least 2"
  end },
  stale_after = { type = "duration", check = common.more_than_zero },
  timeout = { type = "duration", default = 10, check = function(v) return v > 0, "must be more than 0" end },
  poll_interval = { type = "duration", default = common.POLL_INTERVAL,
    check = function(v) return v > 0, "must be more than 0" end },
  max_bytes = { type = "number", default = common.READ_MAX,
    check = function(v) return math.type(v) == "integer" and v > 0, "must be a positive integer" end },
}

--- new(opts) -> an etcd storage (no request is made until it is used).
function M.new(opts)
  local o = options.check(opts, SCHEMA, "storage.etcd", 2)
  if (o.username == nil) ~= (o.password == nil) then
    error("storage.etcd: username and password go together", 2)
  end
  if o.key_file and not o.cert_file then
    error("storage.etcd: key_file needs cert_file", 2)
  end
  local prefix = o.prefix == "/" and "" or o.prefix
  local endpoints = {}
  for i, e in ipairs(o.endpoints) do endpoints[i] = e end
  return setmetatable({
    endpoints = endpoints,
    current = 1,
    prefix = prefix,
    data = prefix .. "/data/",
    locks = prefix .. "/locks/",
    username = o.username,
    password = o.password,
    ca_file = o.ca_file,
    cert_file = o.cert_file,
    key_file = o.key_file,
    lock_ttl = o.lock_ttl,
    stale_after = o.stale_after or 2 * o.lock_ttl,
    -- the lease must be kept alive well within lock_ttl: a short TTL beats faster
    heartbeat_interval = common.heartbeat_for(math.min(o.lock_ttl, o.stale_after or 2 * o.lock_ttl)),
    timeout = o.timeout,
    poll_interval = o.poll_interval,
    max_bytes = o.max_bytes,
    owner = common.new_owner(),
    held = {},
    grants = {},      -- grant -> token (the lock key's mod_revision when granted)
    grant_lease = {}, -- grant -> the lease its lock is bound to
    expired_leases = {}, -- leases the last heartbeat found expired
    lease = nil,      -- this instance's lease id (a decimal string)
    lease_until = 0,  -- core.monotonic() when it expires unless kept alive
    auth_token = nil,
    requests = 0,     -- requests sent (figures: etcd requests per renewal)
  }, Etcd)
end

function Etcd:describe()
  return "etcd:" .. self.endpoints[self.current] .. self.prefix
end

-- ---- requests ------------------------------------------------------------------

-- loop.http inside a loop task; outside one (specs, tools) the request runs
-- in a task of its own while this caller drives the loop until it is done.
local function http(req)
  if loop.in_task() then return loop.http(req) end
  local task = loop.spawn(function() return loop.http(req) end)
  loop.run_until(function() return task.done end)
  if not task.ok then error(task.error, 0) end
  return table.unpack(task.results, 1, task.results.n)
end

local RETRY_CODES = { connect = true, timeout = true, network = true, resolve = true, tls = true,
  protocol = true }

local function b64(s) return core.base64_encode(s) end

local function unb64(s)
  if s == nil then return "" end
  local v = core.base64_decode(s)
  if not v then error("etcd: the gateway sent a value that is not base64", 0) end
  return v
end

local function int(s) return math.tointeger(tonumber(s or 0)) or 0 end

-- The shape of a decoded gateway answer, checked once here so the readers
-- below can index it: nil when it is fine, else what is wrong. (JSON from a
-- gateway, a proxy in front of it, or something else on its port.)
local function scalar(v) local t = type(v) return v == nil or t == "string" or t == "number" end

local function bad_kvs(kvs, where)
  if kvs == nil then return nil end
  if type(kvs) ~= "table" then return where .. ".kvs is not a list" end
  for i, kv in ipairs(kvs) do
    if type(kv) ~= "table" then return string.format("%s.kvs[%d] is not an object", where, i) end
    if not (kv.key == nil or type(kv.key) == "string") or not (kv.value == nil or type(kv.value) == "string")
        or not scalar(kv.mod_revision) or not scalar(kv.create_revision) or not scalar(kv.version) then
      return string.format("%s.kvs[%d] has a member of the wrong type", where, i)
    end
  end
  return nil
end

local function malformed(doc)
  if doc.header ~= nil and (type(doc.header) ~= "table" or not scalar(doc.header.revision)) then
    return "header"
  end
  local why = bad_kvs(doc.kvs, "")
  if why then return why end
  if not scalar(doc.count) or not scalar(doc.ID) or not scalar(doc.TTL) then return "count, ID or TTL" end
  if doc.result ~= nil and (type(doc.result) ~= "table" or not scalar(doc.result.TTL)) then return "result" end
  if doc.responses ~= nil then
    if type(doc.responses) ~= "table" then return "responses is not a list" end
    for i, r in ipairs(doc.responses) do
      if type(r) ~= "table" then return string.format("responses[%d] is not an object", i) end
      local rr = r.response_range
      if rr ~= nil then
        if type(rr) ~= "table" or not scalar(rr.count) then return string.format("responses[%d].response_range", i) end
        why = bad_kvs(rr.kvs, string.format("responses[%d].response_range", i))
        if why then return why end
      end
    end
  end
  return nil
end

-- One POST of body (a table) to path on the current endpoint, failing over
-- to the others -> decoded response | nil, err, code.
-- The failpoint (core/failpoint.c) of each request path.
local POINTS = { ["/v3/kv/txn"] = "etcd.txn", ["/v3/kv/range"] = "etcd.range",
  ["/v3/lease/grant"] = "etcd.lease.grant", ["/v3/lease/keepalive"] = "etcd.lease.keepalive",
  ["/v3/lease/revoke"] = "etcd.lease.revoke" }

function Etcd:call(path, body, retried_auth)
  local text = assert(core.json_encode(body))
  local failures = {}
  local n = #self.endpoints
  for attempt = 0, n - 1 do
    local i = (self.current - 1 + attempt) % n + 1
    local endpoint = self.endpoints[i]
    if self.username and not self.auth_token then
      local ok, err, code = self:authenticate(endpoint)
      if not ok then
        if code ~= "unavailable" then return nil, err, code end
        failures[#failures + 1] = err
        goto next
      end
    end
    do
      self.requests = self.requests + 1
      core.log("debug", "etcd_request", { endpoint = endpoint, path = path })
      local headers = { ["Content-Type"] = "application/json" }
      if self.auth_token then headers.Authorization = self.auth_token end
      local resp, err, code = failpoint.call(POINTS[path], http, { url = endpoint .. path, method = "POST", body = text,
        headers = headers, timeout = self.timeout, connect_timeout = self.timeout,
        max_bytes = 2 * self.max_bytes + 1024 * 1024, ca_file = self.ca_file,
        cert_file = self.cert_file, key_file = self.key_file })
      if not resp then
        err = tostring(err):gsub("^%u+ %S+: ", "", 1) -- core's "POST <url>: ": the endpoint says it
        if not RETRY_CODES[code] then
          return nil, string.format("etcd %s: %s", endpoint, err), code
        end
        failures[#failures + 1] = string.format("etcd %s: %s", endpoint, err)
      elseif resp.status >= 500 then
        failures[#failures + 1] = string.format("etcd %s: HTTP %d %s", endpoint, resp.status,
          (resp.body or ""):sub(1, 200))
      else
        local doc = core.json_decode(resp.body or "", 2 * self.max_bytes + 1024 * 1024)
        if type(doc) ~= "table" then
          return nil, string.format("etcd %s%s: HTTP %d, not JSON", endpoint, path, resp.status),
            "protocol"
        end
        local why = malformed(doc)
        if why then
          return nil, string.format("etcd %s%s: HTTP %d, not a gateway answer (%s)", endpoint, path,
            resp.status, why), "protocol"
        end
        if doc.error or resp.status ~= 200 then
          local msg = tostring(doc.message or doc.error or ("HTTP " .. resp.status))
          if self.username and not retried_auth and (msg:find("auth token", 1, true)
              or msg:find("token is expired", 1, true)) then
            self.auth_token = nil -- expired: authenticate again, once
            return self:call(path, body, true)
          end
          local code = "etcd"
          if msg:find("too large", 1, true) or msg:find("too many operations", 1, true) then
            code = "toobig" -- --max-request-bytes (1.5 MiB) or --max-txn-ops (128)
          end
          if msg:find("permission denied", 1, true) then code = "EACCES" end
          return nil, string.format("etcd %s%s: %s", endpoint, path, msg), code
        end
        if i ~= self.current then
          core.log("warn", "etcd_failover", { from = self.endpoints[self.current], to = endpoint })
          self.current = i
        end
        return doc
      end
    end
    ::next::
  end
  return nil, table.concat(failures, "; "), "unavailable"
end

-- POST /v3/auth/authenticate on endpoint -> true | nil, err, code.
function Etcd:authenticate(endpoint)
  self.requests = self.requests + 1
  local resp, err, code = http { url = endpoint .. "/v3/auth/authenticate", method = "POST",
    body = assert(core.json_encode { name = self.username, password = self.password }),
    headers = { ["Content-Type"] = "application/json" }, timeout = self.timeout,
    connect_timeout = self.timeout, ca_file = self.ca_file, cert_file = self.cert_file,
    key_file = self.key_file }
  if not resp then
    err = tostring(err):gsub("^%u+ %S+: ", "", 1)
    if RETRY_CODES[code] then return nil, string.format("etcd %s: %s", endpoint, err), "unavailable" end
    return nil, string.format("etcd %s: %s", endpoint, err), code
  end
  if resp.status >= 500 then
    return nil, string.format("etcd %s: HTTP %d", endpoint, resp.status), "unavailable"
  end
  local doc = core.json_decode(resp.body or "", 1024 * 1024)
  if type(doc) ~= "table" or type(doc.token) ~= "string" then
    local msg = type(doc) == "table" and (doc.message or doc.error) or ("HTTP " .. resp.status)
    return nil, string.format("etcd %s: authentication as %s failed: %s", endpoint,
      self.username, tostring(msg)), "EACCES"
  end
  self.auth_token = doc.token
  return true
end

-- A txn -> doc (doc.succeeded true/false) | nil, err, code.
function Etcd:txn(compare, success, failure)
  local body = {}
  if compare and #compare > 0 then body.compare = compare end
  if success and #success > 0 then body.success = success end
  if failure and #failure > 0 then body.failure = failure end
  local doc, err, code = self:call("/v3/kv/txn", body)
  if not doc then return nil, err, code end
  doc.succeeded = doc.succeeded == true
  doc.responses = doc.responses or {}
  return doc
end

-- ---- keys ------------------------------------------------------------------------

-- The first key after every key starting with p (etcd's range_end for a prefix).
local function prefix_end(p)
  for i = #p, 1, -1 do
    local c = p:byte(i)
    if c < 255 then return p:sub(1, i - 1) .. string.char(c + 1) end
  end
  return "\0"
end

function Etcd:dkey(key) return self.data .. key end

local function range(key, range_end, extra)
  local r = { key = b64(key) }
  if range_end then r.range_end = b64(range_end) end
  for k, v in pairs(extra or {}) do r[k] = v end
  return { request_range = r }
end

-- Ops: the value at key, and whether anything lies below it.
function Etcd:probe_ops(key)
  local dir = self:dkey(key) .. "/"
  return range(self:dkey(key)), range(dir, prefix_end(dir), { count_only = true })
end

local function kvs_of(resp) return (resp and resp.response_range and resp.response_range.kvs) or {} end
local function count_of(resp) return int(resp and resp.response_range and resp.response_range.count) end

function Etcd:envelope(value)
  return string.format("%s%d\n", M.ENVELOPE, math.floor(core.now() * 1000)) .. value
end

-- An envelope's value -> bytes, modified (seconds) | nil when it is not ours.
local function open_envelope(raw)
  if raw:sub(1, #M.ENVELOPE) ~= M.ENVELOPE then return nil end
  local nl = raw:find("\n", #M.ENVELOPE + 1, true)
  local ms = nl and tonumber(raw:sub(#M.ENVELOPE + 1, nl - 1))
  if not ms then return nil end
  return raw:sub(nl + 1), ms / 1000
end

-- The value of a kv, or nil, err, code.
function Etcd:value_of(kv, key)
  local raw = unb64(kv.value)
  local v = open_envelope(raw)
  if not v then
    return nil, "read " .. key .. ": not written by certmaint (no envelope)", "parse"
  end
  if #v > self.max_bytes then
    return nil, "read " .. key .. ": larger than " .. self.max_bytes .. " bytes", "toobig"
  end
  return v
end

-- ---- the contract's data methods -------------------------------------------------

--- load(key) -> value | nil, err, code: one txn (the value, and whether it is a directory).
function Etcd:load(key)
  common.check_key(key, "load", false, 2)
  local doc, err, code = self:txn(nil, { self:probe_ops(key) })
  if not doc then return nil, err, code end
  local kv = kvs_of(doc.responses[1])[1]
  if kv then return self:value_of(kv, key) end
  if count_of(doc.responses[2]) > 0 then return nil, "read " .. key .. ": Is a directory", "EISDIR" end
  return nil, "read " .. key .. ": No such file or directory", "ENOENT"
end

--- load_many(keys) -> found, failed.  Values come TXN_OPS at a time, one txn
-- each; the keys not found are then asked whether they are directories.
-- A request that fails marks its keys failed with its code.
function Etcd:load_many(list)
  if type(list) ~= "table" then error("storage load_many: keys must be a list", 2) end
  for i = 1, #list do common.check_key(list[i], "load_many", false, 2) end
  local found, failed = {}, {}
  local missing = {}
  for first = 1, #list, M.TXN_OPS do
    local ops, batch = {}, {}
    for i = first, math.min(#list, first + M.TXN_OPS - 1) do
      batch[#batch + 1] = list[i]
      ops[#ops + 1] = range(self:dkey(list[i]))
    end
    local doc, err, code = self:txn(nil, ops)
    for j, key in ipairs(batch) do
      if not doc then
        failed[key] = { message = err, code = code }
      else
        local kv = kvs_of(doc.responses[j])[1]
        if kv then
          local v, verr, vcode = self:value_of(kv, key)
          if v then found[key] = v else failed[key] = { message = verr, code = vcode } end
        else
          missing[#missing + 1] = key
        end
      end
    end
  end
  for first = 1, #missing, M.TXN_OPS do
    local ops, batch = {}, {}
    for i = first, math.min(#missing, first + M.TXN_OPS - 1) do
      local dir = self:dkey(missing[i]) .. "/"
      batch[#batch + 1] = missing[i]
      ops[#ops + 1] = range(dir, prefix_end(dir), { count_only = true })
    end
    local doc, err, code = self:txn(nil, ops)
    for j, key in ipairs(batch) do
      if not doc then
        failed[key] = { message = err, code = code }
      elseif count_of(doc.responses[j]) > 0 then
        failed[key] = { message = "read " .. key .. ": Is a directory", code = "EISDIR" }
      else
        failed[key] = { message = "read " .. key .. ": No such file or directory", code = "ENOENT" }
      end
    end
  end
  return found, failed
end

--- exists(key) -> boolean (a value or a directory; false when etcd cannot be asked)
function Etcd:exists(key)
  common.check_key(key, "exists", true, 2)
  if key == "" then return true end
  local doc = self:txn(nil, { self:probe_ops(key) })
  if not doc then return false end
  return kvs_of(doc.responses[1])[1] ~= nil or count_of(doc.responses[2]) > 0
end

-- The compares that make a put of key behave as a file system would: no
-- ancestor is a value (ENOTDIR), nothing lies below key (EISDIR).
-- seen (optional) drops the compares of directories another put checks already.
function Etcd:target_compares(key, out, seen)
  local dir = key:match("^(.*)/[^/]*$")
  while dir do
    if seen and seen[dir] then break end
    if seen then seen[dir] = true end
    out[#out + 1] = { key = b64(self:dkey(dir)), target = "VERSION", version = "0" }
    dir = dir:match("^(.*)/[^/]*$")
  end
  local below = self:dkey(key) .. "/"
  out[#out + 1] = { key = b64(below), range_end = b64(prefix_end(below)), target = "VERSION",
    version = "0" }
  return out
end

-- Why a put of key would be refused -> nil, err, code | true (it would not).
function Etcd:target_refusal(key)
  local ops, dirs = {}, {}
  local dir = key:match("^(.*)/[^/]*$")
  while dir do
    dirs[#dirs + 1] = dir
    ops[#ops + 1] = range(self:dkey(dir), nil, { count_only = true })
    dir = dir:match("^(.*)/[^/]*$")
  end
  local below = self:dkey(key) .. "/"
  ops[#ops + 1] = range(below, prefix_end(below), { count_only = true })
  local doc, err, code = self:txn(nil, ops)
  if not doc then return nil, err, code end
  for i = #dirs, 1, -1 do
    if count_of(doc.responses[i]) > 0 then
      return nil, "mkdir " .. dirs[i] .. ": Not a directory", "ENOTDIR"
    end
  end
  if count_of(doc.responses[#ops]) > 0 then
    return nil, "rename " .. key .. ": Is a directory", "EISDIR"
  end
  return true
end

--- store(key, value [, {mode=}]) -> true | nil, err, code: one txn.  Modes
-- are checked (a private key is always "0600") but etcd keeps none: access
-- is etcd's own (users, roles).
function Etcd:store(key, value, opts)
  common.check_key(key, "store", false, 2)
  if type(value) ~= "string" then
    error("storage store: value must be a string, not " .. type(value), 2)
  end
  common.store_mode(key, opts, "0600", 2)
  if #value > self.max_bytes then
    return nil, "store " .. key .. ": larger than " .. self.max_bytes .. " bytes", "toobig"
  end
  local doc, err, code = self:txn(self:target_compares(key, {}),
    { { request_put = { key = b64(self:dkey(key)), value = b64(self:envelope(value)) } } })
  if not doc then return nil, err, code end
  if doc.succeeded then return true end
  local ok
  ok, err, code = self:target_refusal(key)
  if not ok then return nil, err, code end
  return nil, "store " .. key .. ": changed while storing, try again", "EAGAIN"
end

local function delete_ops(self, key, out)
  local k = self:dkey(key)
  out[#out + 1] = { request_delete_range = { key = b64(k) } }
  out[#out + 1] = { request_delete_range = { key = b64(k .. "/"), range_end = b64(prefix_end(k .. "/")) } }
  return out
end

--- delete(key) -> true | nil, err, code: the key and everything below it, one txn.
function Etcd:delete(key)
  common.check_key(key, "delete", false, 2)
  local doc, err, code = self:txn(nil, delete_ops(self, key, {}))
  if not doc then return nil, err, code end
  return true
end

-- Every key (below data/) in [from, to), keys only, PAGE at a time; each
-- page's kvs go to each(kv, key) which may return a key to continue from.
function Etcd:scan(from, to, each)
  local start = from
  while true do
    local doc, err, code = self:call("/v3/kv/range", { key = b64(start), range_end = b64(to),
      limit = M.PAGE, keys_only = true })
    if not doc then return nil, err, code end
    local kvs = doc.kvs or {}
    local next_start
    for _, kv in ipairs(kvs) do
      local k = unb64(kv.key)
      if k < start or (to ~= "\0" and k >= to) then
        -- what etcd never does: each() and the next page rely on it
        return nil, string.format("etcd: a range answer with a key outside the range asked for (%q)",
          k:sub(1, 200)), "protocol"
      end
      local skip = each(kv, k:sub(#self.data + 1))
      next_start = k .. "\0"
      if skip and skip > next_start then next_start = skip end
    end
    if not doc.more or #kvs == 0 then return true end
    start = next_start
  end
end

--- list(prefix, recursive) -> sorted keys | nil, err, code: paginated range
-- requests (keys only); a non-recursive list skips over each child directory.
function Etcd:list(prefix, recursive)
  common.check_key(prefix, "list", true, 2)
  local p = prefix == "" and "" or prefix .. "/"
  local from = self.data .. p
  local out, seen = {}, {}
  local ok, err, code = self:scan(from, prefix_end(from), function(_, key)
    local rest = key:sub(#p + 1)
    local first = rest:match("^[^/]+")
    if not first then return nil end -- "<prefix>/" or "<prefix>//x": not a key certmaint writes
    if recursive or first == rest then
      out[#out + 1] = key
      return nil
    end
    local child = p .. first
    if not seen[child] then
      seen[child] = true
      out[#out + 1] = child
    end
    return self.data .. child .. "0" -- "0" follows "/": past everything below child
  end)
  if not ok then return nil, err, code end
  if #out == 0 and prefix ~= "" then
    local doc
    doc, err, code = self:txn(nil, { self:probe_ops(prefix) })
    if not doc then return nil, err, code end
    if kvs_of(doc.responses[1])[1] then
      return nil, "list " .. prefix .. ": not a directory", "ENOTDIR"
    end
    return nil, "list " .. prefix .. ": No such file or directory", "ENOENT"
  end
  table.sort(out)
  return out
end

--- stat(key) -> {key, size, modified, terminal} | nil, err, code.  A value's
-- modified time is in its envelope; a directory's is its newest value's
-- (found by mod_revision, keys only, then one read).
function Etcd:stat(key)
  common.check_key(key, "stat", true, 2)
  if key ~= "" then
    local doc, err, code = self:txn(nil, { self:probe_ops(key) })
    if not doc then return nil, err, code end
    local kv = kvs_of(doc.responses[1])[1]
    if kv then
      local v, modified = open_envelope(unb64(kv.value))
      if not v then return nil, "stat " .. key .. ": not written by certmaint (no envelope)", "parse" end
      return { key = key, size = #v, modified = modified, terminal = true }
    end
    if count_of(doc.responses[2]) == 0 then
      return nil, "stat " .. key .. ": No such file or directory", "ENOENT"
    end
  end
  local from = self.data .. (key == "" and "" or key .. "/")
  local newest, newest_rev = nil, -1
  local ok, err, code = self:scan(from, prefix_end(from), function(kv, k)
    local rev = int(kv.mod_revision)
    if rev > newest_rev then newest, newest_rev = k, rev end
  end)
  if not ok then return nil, err, code end
  local modified = 0
  if newest then
    local doc = self:call("/v3/kv/range", { key = b64(self:dkey(newest)) })
    local kv = doc and (doc.kvs or {})[1]
    if kv then modified = select(2, open_envelope(unb64(kv.value))) or 0 end
  end
  return { key = key, size = 0, modified = modified, terminal = false }
end

-- ---- locks (the primitives under common.lua's lock life cycle) -------------

function Etcd:remember_grant(grant, token, lease)
  self.grants[grant], self.grant_lease[grant] = token, lease
end

function Etcd:forget_grant(grant)
  self.grants[grant], self.grant_lease[grant] = nil, nil
end

function Etcd:lkey(lk) return self.locks .. lk end

-- This instance's lease, granted when there is none -> id | nil, err, code.
-- A lease past half its TTL since it was last granted or kept alive is not
-- used for a new lock: it may expire (or be expiring: etcd still accepts
-- puts on it for a moment) right after, taking the new lock with it.  Times
-- are core.monotonic(): the lease lives in etcd's real time, whatever a
-- spec does to core.now().
function Etcd:ensure_lease()
  local t0 = core.monotonic()
  if self.lease and t0 < self.lease_until - self.lock_ttl / 2 then return self.lease end
  local doc, err, code = self:call("/v3/lease/grant", { TTL = self.lock_ttl })
  if not doc then return nil, err, code end
  if not doc.ID then return nil, "etcd: lease grant gave no ID", "protocol" end
  -- another task of this instance may have granted one meanwhile (both
  -- waited on their grant): keep that, so all locks share one kept-alive
  -- lease; ours has no key and just expires
  if self.lease and core.monotonic() < self.lease_until - self.lock_ttl / 2 then return self.lease end
  self.lease = tostring(doc.ID)
  self.lease_until = t0 + int(doc.TTL)
  return self.lease
end

local function beat_record(now)
  return assert(core.json_encode { updated = math.floor(now * 1000) })
end

-- The owner recorded in a lock kv, and whether the lock's heartbeat (beat kv) is stale.
function Etcd:lock_state(kv, beat_kv, now)
  local rec = common.decode_lock(unb64(kv.value))
  local owner = rec and rec.owner or "unknown"
  local updated = rec and rec.updated or 0
  if beat_kv then
    local b = core.json_decode(unb64(beat_kv.value), 4096)
    if type(b) == "table" and math.type(b.updated) == "integer" then updated = b.updated / 1000 end
  end
  return owner, common.is_stale(updated, now, self.stale_after), rec
end

-- Put ops for a grant of lk (record and heartbeat, bound to lease).
function Etcd:grant_ops(lk, grant, lease, now)
  return {
    { request_put = { key = b64(self:lkey(lk)), value = b64(common.encode_lock(self.owner, now, now, grant)),
      lease = lease } },
    { request_put = { key = b64(self:lkey(lk) .. ".beat"), value = b64(beat_record(now)), lease = lease } },
  }
end

function Etcd:_acquire(lk, name, grant, retried)
  local lease, err, code = self:ensure_lease()
  if not lease then return nil, err, code end
  local now = core.now()
  local key = self:lkey(lk)
  local doc
  doc, err, code = self:txn({ { key = b64(key), target = "CREATE", create_revision = "0" } },
    self:grant_ops(lk, grant, lease, now),
    { range(key), range(key .. ".beat") })
  if not doc then
    if code == "etcd" and err:find("lease not found", 1, true) and not retried then
      self.lease = nil -- expired while idle: a new one, once
      return self:_acquire(lk, name, grant, true)
    end
    return nil, err, code
  end
  if doc.succeeded then
    local token = int(doc.header and doc.header.revision)
    if token <= 0 then return nil, "etcd: a lock granted without a revision (header.revision)", "protocol" end
    self:remember_grant(grant, token, lease)
    return true, token
  end
  local kv = kvs_of(doc.responses[1])[1]
  if not kv then return false, "unknown (just released)" end
  local beat = kvs_of(doc.responses[2])[1]
  local owner, stale, rec = self:lock_state(kv, beat, now)
  if rec and rec.grant == grant and rec.owner == self.owner then
    -- this very grant: an earlier try of this txn was applied, its answer
    -- lost (a timeout, then fail-over); the grant's revision is the record's
    local token = int(kv.mod_revision)
    self:remember_grant(grant, token, lease)
    return true, token
  end
  if owner == self.owner then return false, owner .. " (this instance)" end
  if not stale then return false, owner end
  -- take it over only as it was read: neither the record nor its beat moved since
  local cmp = { { key = b64(key), target = "MOD", mod_revision = tostring(kv.mod_revision) } }
  if beat then
    cmp[2] = { key = b64(key .. ".beat"), target = "MOD", mod_revision = tostring(beat.mod_revision) }
  else
    cmp[2] = { key = b64(key .. ".beat"), target = "VERSION", version = "0" }
  end
  doc, err, code = self:txn(cmp, self:grant_ops(lk, grant, lease, now))
  if not doc then return nil, err, code end
  if not doc.succeeded then return false, owner end
  core.log("warn", "lock_taken_over", { lock = name, stale_owner = owner, storage = self:describe() })
  local token = int(doc.header and doc.header.revision)
  if token <= 0 then return nil, "etcd: a lock taken over without a revision (header.revision)", "protocol" end
  self:remember_grant(grant, token, lease)
  return true, token
end

function Etcd:_release(lk, grant)
  local key = self:lkey(lk)
  local cmp
  if grant ~= nil then
    local token = self.grants[grant]
    self:forget_grant(grant)
    if not token then return false, "another grant" end
    cmp = { { key = b64(key), target = "MOD", mod_revision = tostring(token) } }
  else
    -- by name: this instance's lock, whichever grant
    local doc, err, code = self:call("/v3/kv/range", { key = b64(key) })
    if not doc then return nil, err, code end
    local kv = (doc.kvs or {})[1]
    if not kv then return "none" end
    local rec = common.decode_lock(unb64(kv.value))
    if not rec or rec.owner ~= self.owner then return false, rec and rec.owner or "unknown" end
    cmp = { { key = b64(key), target = "MOD", mod_revision = tostring(kv.mod_revision) } }
    if rec.grant then self:forget_grant(rec.grant) end
  end
  local doc, err, code = self:txn(cmp,
    { { request_delete_range = { key = b64(key) } }, { request_delete_range = { key = b64(key .. ".beat") } } },
    { range(key) })
  if not doc then return nil, err, code end
  if doc.succeeded then return true end
  local kv = kvs_of(doc.responses[1])[1]
  if not kv then return "none" end
  local rec = common.decode_lock(unb64(kv.value))
  local owner = rec and rec.owner or "unknown"
  if owner == self.owner then owner = owner .. " (another grant)" end
  return false, owner
end

function Etcd:_refresh(lock, now)
  local token, lease = self.grants[lock.grant], self.grant_lease[lock.grant]
  if not token or self.expired_leases[lease] then -- its lease expired: the lock went with it
    self:forget_grant(lock.grant)
    return false, nil
  end
  local key = self:lkey(lock.key)
  local doc, err = self:txn({ { key = b64(key), target = "MOD", mod_revision = tostring(token) } },
    { { request_put = { key = b64(key .. ".beat"), value = b64(beat_record(now)), lease = lease } } },
    { range(key) })
  if not doc then return nil, err end
  if doc.succeeded then return true end
  self:forget_grant(lock.grant)
  local kv = kvs_of(doc.responses[1])[1]
  local rec = kv and common.decode_lock(unb64(kv.value))
  return false, rec and rec.owner or nil
end

function Etcd:_holds(lock)
  local token = self.grants[lock.grant]
  local doc, err, code = self:call("/v3/kv/range", { key = b64(self:lkey(lock.key)) })
  if not doc then return nil, err, code end
  local kv = (doc.kvs or {})[1]
  if kv and token and int(kv.mod_revision) == token then return true end
  local rec = kv and common.decode_lock(unb64(kv.value))
  return false, rec and rec.owner or nil
end

--- refresh_locks() -> refreshed, lost: keeps this instance's lease alive
-- (one keepalive), then each held lock's heartbeat (one txn each).  A lease
-- that expired took every lock with it: they are reported lost.
function Etcd:refresh_locks()
  -- every lease a held lock is bound to (normally just self.lease; an older
  -- one too if self.lease was replaced while locks on it were held)
  local leases, seen = {}, {}
  if self.lease then leases[1], seen[self.lease] = self.lease, true end
  for _, lock in pairs(self.held) do
    local lease = self.grant_lease[lock.grant]
    if lease and not seen[lease] then leases[#leases + 1], seen[lease] = lease, true end
  end
  self.expired_leases = {}
  for _, lease in ipairs(leases) do
    local t0 = core.monotonic()
    local doc, err = self:call("/v3/lease/keepalive", { ID = lease })
    local result = doc and (doc.result or doc)
    if doc and int(result.TTL) > 0 then
      if lease == self.lease then self.lease_until = t0 + int(result.TTL) end
    elseif doc then
      core.log("warn", "etcd_lease_expired", { lease = lease, storage = self:describe() })
      self.expired_leases[lease] = true
      if lease == self.lease then self.lease = nil end
    else
      core.log("warn", "etcd_keepalive_failed", { error = err, storage = self:describe() })
    end
  end
  local refreshed, lost = common.refresh_locks(self)
  return refreshed, lost
end

--- close() -> true | nil, err, code: revoke this instance's leases (its
-- locks go with them).  Optional in the contract: the daemon may call it on
-- shutdown; without it the lease just runs out (lock_ttl).
function Etcd:close()
  local leases, seen = {}, {}
  for _, lease in pairs(self.grant_lease) do
    if not seen[lease] then leases[#leases + 1], seen[lease] = lease, true end
  end
  if self.lease and not seen[self.lease] then leases[#leases + 1] = self.lease end
  self.lease = nil
  self.held, self.grants, self.grant_lease = {}, {}, {}
  for _, lease in ipairs(leases) do
    local doc, err, code = self:call("/v3/lease/revoke", { ID = lease })
    if not doc and not tostring(err):find("lease not found", 1, true) then return nil, err, code end
  end
  return true
end

--- delete_prefix() -> true | nil, err, code: every key under the prefix,
-- data and locks (specs and tools; the engine never calls it).
function Etcd:delete_prefix()
  local p = self.prefix .. "/"
  local doc, err, code = self:call("/v3/kv/deleterange", { key = b64(p), range_end = b64(prefix_end(p)) })
  if not doc then return nil, err, code end
  return true
end

-- ---- commit: one txn ----------------------------------------------------------

-- No journal: a commit is one etcd txn, applied whole or not at all.
function Etcd:recover_with(step)
  return 0, 0
end

--- commit{put =, delete =, fence =} -> true | nil, err, code: ONE txn whose
-- compares are the fence (the lock key's mod_revision is still the grant's
-- token) and each put's target checks; then every put and delete.  The
-- fence is checked by etcd in the txn, not read first (common.begin_commit's
-- _holds would cost a request and prove nothing the compare does not).
-- Crash injection (crash_after) has one step: the txn.
function Etcd:commit(tx)
  local puts, deletes, fence = common.check_commit(tx, "0600", 2)
  local step = common.crash_injector(self)
  local token
  if fence then
    local held = self.held[fence.key]
    token = self.grants[fence.grant]
    if held == nil or held.grant ~= fence.grant or not token then
      return nil, string.format("commit fenced: lock %s (token %d) is no longer held by this "
        .. "instance", fence.name, fence.token), "fenced"
    end
  end
  if #puts == 0 and #deletes == 0 then
    if not fence then return true end
    local ok, err, code = common.check_fence(self, fence) -- nothing to write: ask
    if not ok then return nil, err, code end
    return true
  end
  for _, p in ipairs(puts) do
    if #p.value > self.max_bytes then
      return nil, "commit " .. p.key .. ": larger than " .. self.max_bytes .. " bytes", "toobig"
    end
  end
  local cmp, ops = {}, {}
  if fence then
    cmp[1] = { key = b64(self:lkey(fence.key)), target = "MOD", mod_revision = tostring(token) }
  end
  local seen = {}
  for _, p in ipairs(puts) do self:target_compares(p.key, cmp, seen) end
  for _, p in ipairs(puts) do
    -- a put below a folder this commit deletes would be deleted after it (as
    -- the other backends apply puts, then deletes); etcd refuses a txn whose
    -- put and delete ranges overlap, so it is left out instead
    local doomed = false
    for _, d in ipairs(deletes) do
      if p.key:sub(1, #d + 1) == d .. "/" then doomed = true break end
    end
    if not doomed then
      ops[#ops + 1] = { request_put = { key = b64(self:dkey(p.key)), value = b64(self:envelope(p.value)) } }
    end
  end
  for _, key in ipairs(deletes) do delete_ops(self, key, ops) end
  step()
  local doc, err, code = self:txn(cmp, ops, fence and { range(self:lkey(fence.key)) } or nil)
  if not doc then return nil, err, code end
  if doc.succeeded then return true end
  if fence then
    local kv = kvs_of(doc.responses[1])[1]
    if not kv or int(kv.mod_revision) ~= self.grants[fence.grant] then
      local rec = kv and common.decode_lock(unb64(kv.value))
      core.log("warn", "etcd_commit_fenced", { lock = fence.name, token = fence.token,
        holder = rec and rec.owner or "none", storage = self:describe() })
      return nil, string.format("commit fenced: lock %s (token %d) is now held by %s", fence.name,
        fence.token, rec and rec.owner or "nobody"), "fenced"
    end
  end
  for _, p in ipairs(puts) do
    local ok
    ok, err, code = self:target_refusal(p.key)
    if not ok then return nil, err, code end
  end
  return nil, "commit: storage changed while committing, try again", "EAGAIN"
end

return M
