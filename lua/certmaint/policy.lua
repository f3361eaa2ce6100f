--- certmaint.policy: validate a policy table and apply its defaults.
--
--   local P = require("certmaint.policy")(spec [, level])
--   local P = require("certmaint.policy").validate(spec, "file:line")
--
-- returns a NEW table (the spec is not modified) with every field checked and
-- defaulted, durations in seconds, certificate names normalised, and
-- `P.source = "file:line"` of the certmaint.policy { ... } call; or raises an
-- error whose message starts with that file:line and names the field:
--
--   policy.lua:3: policy field "renew_windwo" is unknown (did you mean "renewal_window_ratio"?)
--   policy.lua:3: policy field "renew_check_interval": bad duration "10 minutes" (use seconds or "90s", "10m", "1h", "7d")
--   policy.lua:3: policy field "certificates[2][1]": "exa_mple.com" is not a valid DNS name: ...
--
-- `level` says which stack frame made the call, as for error(): 1 is this
-- function, 2 (the default) its caller.
--
-- Where the call is: a policy file says `return certmaint.policy { ... }`, a
-- tail call, so the file's frame is gone from the stack by the time any
-- function it calls runs. certmaint (init.lua) therefore serves `policy`
-- through __index: the field is read while the file's frame is still live, so
-- __index notes its file:line and hands back a function that validates at that
-- place. Calling this module directly in a tail position (`return
-- require("certmaint.policy") { ... }`) cannot know the line: use certmaint.policy.
--
-- The schema is the table M.FIELDS: a new policy field is one line there.
local core = require "certmaint.core"
local duration = require "certmaint.duration"
local options = require "certmaint.options"
local issuer = require "certmaint.issuer"

local M = {}

M.KEY_TYPES = { "p256", "p384", "rsa2048", "rsa4096" }
M.LOG_FORMATS = { "text", "json" }
M.LOG_LEVELS = { "debug", "info", "warn", "error" }
M.STORAGE_METHODS = require("certmaint.storage").METHODS -- contract v2 (storage/init.lua)
M.ISSUER_METHODS = issuer.REQUIRED -- and the optional ones: certmaint.issuer.check
M.MAX_CONCURRENCY = 1000
M.MAX_OCSP_CONCURRENCY = 1024 -- OCSP/CRL fetches at once (each holds a transfer and its buffer)
M.MAX_NAMES = 100 -- SANs per certificate (Let's Encrypt's limit)

local POLICY_MT = { __name = "certmaint.policy" }

----------------------------------------------------------------------------
-- Errors

-- A field error is a table until the top level turns it into the message, so
-- checkers stay independent of where the policy came from.
local FieldError = {}
FieldError.__index = FieldError

local function field_error(path, msg)
  return setmetatable({ path = path, msg = msg }, FieldError)
end

local function describe(v)
  local t = type(v)
  if t == "string" then
    if #v > 60 then v = v:sub(1, 60) .. "..." end
    return string.format("string %q", v)
  elseif t == "number" or t == "boolean" then
    return t .. " " .. tostring(v)
  end
  return t
end

local function quoted_list(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = string.format("%q", v) end
  return table.concat(out, ", ")
end

--- The closest of `candidates` to the unknown key `word`, or nil (certmaint.options).
M.suggest = options.suggest

local keys_of = options.names

-- The first key of `t` not in `fields` as a FieldError, or nil.
local function unknown_key(t, path, fields)
  local k, hint, known_names = options.unknown(t, fields)
  if k == nil then return nil end
  if type(k) ~= "string" then
    return field_error(path, string.format("has an unexpected positional value [%s] (fields are named: name = value)",
      tostring(k)))
  end
  local full = path and (path .. "." .. k) or k
  if hint then
    return field_error(full, string.format("is unknown (did you mean %q?)", hint))
  end
  return field_error(full, "is unknown (known: " .. table.concat(known_names, ", ") .. ")")
end

----------------------------------------------------------------------------
-- Kinds: check(value, field, path, ctx) -> normalised value | nil, FieldError

local KINDS = {}

local callable = options.callable

function KINDS.duration(v, field, path)
  local secs, err = duration.parse(v)
  if not secs then return nil, field_error(path, err) end
  if field.min and secs < field.min then
    return nil, field_error(path, string.format("%s is too short (at least %s)",
      duration.format(secs), duration.format(field.min)))
  end
  return secs
end

function KINDS.boolean(v, _, path)
  if type(v) ~= "boolean" then
    return nil, field_error(path, "expected true or false, got " .. describe(v))
  end
  return v
end

function KINDS.integer(v, field, path)
  local n = type(v) == "number" and math.tointeger(v)
  local lo, hi = field.min or -math.huge, field.max or math.huge
  if not n or n < lo or n > hi then
    local range = field.max and string.format("from %d to %d", lo, hi) or string.format("at least %d", lo)
    return nil, field_error(path, string.format("expected an integer %s, got %s", range, describe(v)))
  end
  return n
end

function KINDS.ratio(v, _, path)
  if type(v) ~= "number" or not (v > 0 and v < 1) then
    return nil, field_error(path, "expected a number between 0 and 1 (exclusive), e.g. 1/3, got " .. describe(v))
  end
  return v
end

function KINDS.enum(v, field, path)
  if type(v) == "string" then
    for _, ok in ipairs(field.values) do
      if v == ok then return v end
    end
    local hint = M.suggest(v, field.values)
    return nil, field_error(path, string.format("%s is not one of %s%s", string.format("%q", v),
      quoted_list(field.values), hint and string.format(" (did you mean %q?)", hint) or ""))
  end
  return nil, field_error(path, "expected one of " .. quoted_list(field.values) .. ", got " .. describe(v))
end

function KINDS.hook(v, _, path)
  if not callable(v) then
    return nil, field_error(path, "expected a function, got " .. describe(v))
  end
  return v
end

-- A hook, or a list of hooks each called on its own (the notifications:
-- on_failure = { notify.webhook{...}, notify.sendmail{...} }). Kept as a list.
function KINDS.hooks(v, _, path)
  if callable(v) then return { v } end
  if type(v) ~= "table" or getmetatable(v) ~= nil or #v == 0 then
    return nil, field_error(path, "expected a function or a list of functions, got " .. describe(v))
  end
  local out = {}
  for k, fn in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then
      return nil, field_error(path, "expected a list of functions, found the key " .. describe(k))
    end
    if not callable(fn) then
      return nil, field_error(path .. "[" .. k .. "]", "expected a function, got " .. describe(fn))
    end
    out[k] = fn
  end
  return out
end

-- An object with methods (storage, issuer): kept as is, not copied.
function KINDS.object(v, field, path)
  local tv = type(v)
  if tv ~= "table" and tv ~= "userdata" then
    return nil, field_error(path, string.format("expected %s object (with methods %s), got %s",
      field.what, table.concat(field.methods, ", "), describe(v)))
  end
  for _, m in ipairs(field.methods) do
    local ok, f = pcall(function() return v[m] end)
    if not ok or not callable(f) then
      return nil, field_error(path, string.format("%s object has no method %q (it needs %s)",
        field.what, m, table.concat(field.methods, ", ")))
    end
  end
  return v
end

-- The issuer: everything the engine and CLI call on it (certmaint.issuer.check),
-- or a list of them, { a, b } (certmaint.issuer.list: tried in turn).
function KINDS.issuer(v, _, path)
  if issuer.is_list(v) then
    local ok, why = issuer.check_list(v)
    if not ok then
      local at, rest = why:match("^(%[%d+%]): (.*)$")
      if at then return nil, field_error(path .. at, rest) end
      return nil, field_error(path, why)
    end
    return issuer.list(v)
  end
  local ok, why, method = issuer.check(v)
  if ok then return v end
  if not method then
    why = "expected an issuer object (with methods issue), got " .. describe(v)
  end
  return nil, field_error(path, why)
end

-- A non-empty string without control characters (an ACME profile name).
function KINDS.token(v, _, path)
  if type(v) ~= "string" or v == "" or v:find("[%c%s]") then
    return nil, field_error(path, "expected a name such as \"tlsserver\" (no spaces), got " .. describe(v))
  end
  return v
end

local function check_record(v, fields, path, ctx)
  if type(v) ~= "table" then
    return nil, field_error(path, "expected a table, got " .. describe(v))
  end
  local bad = unknown_key(v, path, fields)
  if bad then return nil, bad end
  local names = keys_of(fields)
  local out = {}
  for _, k in ipairs(names) do
    local field = fields[k]
    local sub = path and (path .. "." .. k) or k
    local val = v[k]
    if val == nil then
      if field.required then
        return nil, field_error(sub, "is required" .. (field.hint and (" (" .. field.hint .. ")") or ""))
      end
      val = field.default
      if type(val) == "function" then val = val() end
    end
    if val ~= nil then
      local res, err = KINDS[field.kind](val, field, sub, ctx)
      if err then return nil, err end
      out[k] = res
    end
  end
  return out
end

-- One file path (a non-empty string without NUL), e.g. health_file.
function KINDS.path(v, _, path)
  if type(v) ~= "string" or v == "" or v:find("%z") then
    return nil, field_error(path, "expected a file path, got " .. describe(v))
  end
  return v
end

-- "HOST:PORT" for one of the core's listeners (metrics.listen); whether
-- the host is loopback is the record's check (it needs allow_remote).
function KINDS.listen(v, _, path)
  if type(v) ~= "string" or not (v:match("^%[[^%]]*%]:%d+$") or v:match("^[^:]*:%d+$")) then
    return nil, field_error(path, "expected \"HOST:PORT\", e.g. \"127.0.0.1:9464\", got " .. describe(v))
  end
  return v
end

-- A record with field.check(out, path) -> nil | FieldError: rules across its fields.
function KINDS.record(v, field, path, ctx)
  local out, err = check_record(v, field.fields, path, ctx)
  if out and field.check then err = field.check(out, path) end
  if err then return nil, err end
  return out
end

-- metrics: a listen address off the loopback interface needs allow_remote.
local function metrics_check(m, path)
  if not m.listen then return nil end
  local ok, why = require("certmaint.metrics").check_listen(m.listen, m.allow_remote)
  if not ok then return field_error(path .. ".listen", why) end
  return nil
end

-- A list of file paths (non-empty strings), e.g. ocsp.staple_files.
function KINDS.paths(v, _, path)
  if type(v) ~= "table" then
    return nil, field_error(path, "expected a list of file paths, got " .. describe(v))
  end
  local out = {}
  for k, p in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then
      return nil, field_error(path, "expected a list of file paths, got a table with key " .. describe(k))
    end
    if type(p) ~= "string" or p == "" or p:find("%z") then
      return nil, field_error(string.format("%s[%d]", path, k), "expected a file path, got " .. describe(p))
    end
    out[k] = p
  end
  return out
end

-- A file path, or false (order_budget.public_suffix_list: false = no list).
function KINDS.path_or_false(v, _, path)
  if v == false then return false end
  if type(v) ~= "string" or v == "" or v:find("%z") then
    return nil, field_error(path, "expected a file path or false, got " .. describe(v))
  end
  return v
end

-- certificates: { "a.example", { "b.example", "www.b.example" },
--                 { names = { ... }, key_type = "p384", on_demand = true } }
local ENTRY_FIELDS = {
  names = true, key_type = true, on_demand = true, reuse_key = true, profile = true,
}

local function normalize_name(name, path)
  if type(name) ~= "string" then
    return nil, field_error(path, "expected a DNS name (string), got " .. describe(name))
  end
  local normalize = core.name_normalize
  if not normalize then
    error("certmaint.core has no name_normalize (core built without the name unit?)", 0)
  end
  local norm, err = normalize(name)
  if not norm then
    -- the core names the input itself; we already do
    local why = tostring(err):gsub('^name %b"": ', "")
    return nil, field_error(path, string.format("%q is not a valid DNS name: %s", name, why))
  end
  return norm
end

local function check_names(list, path, entry_path)
  if type(list) ~= "table" then
    return nil, field_error(path, "expected a list of names, got " .. describe(list))
  end
  local n = #list
  for k in pairs(list) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, field_error(path, string.format("expected a list of names, found key %s", describe(k)))
    end
  end
  if n == 0 then
    return nil, field_error(entry_path, "has no names (a certificate needs at least one)")
  end
  local names, seen = {}, {}
  for i = 1, n do
    local norm, err = normalize_name(list[i], string.format("%s[%d]", path, i))
    if err then return nil, err end
    if not seen[norm] then
      seen[norm] = true
      names[#names + 1] = norm
    end
  end
  if #names > M.MAX_NAMES then
    return nil, field_error(entry_path, string.format("has %d names, more than %d", #names, M.MAX_NAMES))
  end
  return names
end

local function check_entry(entry, path, ctx)
  if type(entry) == "string" then
    local norm, err = normalize_name(entry, path)
    if err then return nil, err end
    return { names = { norm } }
  end
  if type(entry) ~= "table" then
    return nil, field_error(path, "expected a name, a list of names or { names = {...} }, got " .. describe(entry))
  end
  if entry.names == nil then
    -- a plain list of names
    local names, err = check_names(entry, path, path)
    if err then return nil, err end
    return { names = names }
  end
  local bad = unknown_key(entry, path, ENTRY_FIELDS)
  if bad then return nil, bad end
  local names, err = check_names(entry.names, path .. ".names", path)
  if err then return nil, err end
  local out = { names = names }
  if entry.key_type ~= nil then
    out.key_type, err = KINDS.enum(entry.key_type, { values = M.KEY_TYPES }, path .. ".key_type")
    if err then return nil, err end
  end
  if entry.on_demand ~= nil then
    out.on_demand, err = KINDS.boolean(entry.on_demand, nil, path .. ".on_demand")
    if err then return nil, err end
  end
  if entry.reuse_key ~= nil then
    out.reuse_key, err = KINDS.boolean(entry.reuse_key, nil, path .. ".reuse_key")
    if err then return nil, err end
  end
  if entry.profile ~= nil then
    out.profile, err = KINDS.token(entry.profile, nil, path .. ".profile")
    if err then return nil, err end
  end
  return out
end

function KINDS.certificates(v, _, path, ctx)
  if type(v) ~= "table" then
    return nil, field_error(path, "expected a list of certificates, e.g. { \"example.com\" }, got " .. describe(v))
  end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, field_error(path, string.format("expected a list of certificates, found key %s", describe(k)))
    end
  end
  local out, owner = {}, {}
  local normalize, default_key = core.name_normalize, ctx.key_type
  local function also_in(i, name)
    return nil, field_error(string.format("%s[%d]", path, i),
      string.format("name %q is also in %s[%d] (a name belongs to one certificate)", name, path, owner[name]))
  end
  for i = 1, n do
    local given, entry = v[i], nil
    -- the common entry, one valid name: no path text made unless it fails
    local norm = type(given) == "string" and normalize and normalize(given)
    if norm then
      if owner[norm] then return also_in(i, norm) end
      owner[norm] = i
      entry = { names = { norm }, key_type = default_key, on_demand = false }
    else
      local err
      entry, err = check_entry(given, string.format("%s[%d]", path, i), ctx)
      if err then return nil, err end
      for _, name in ipairs(entry.names) do
        if owner[name] then return also_in(i, name) end
        owner[name] = i
      end
      entry.key_type = entry.key_type or default_key
      entry.on_demand = entry.on_demand or false
    end
    out[i] = entry
  end
  return out
end

----------------------------------------------------------------------------
-- The schema (DESIGN.md "The policy file"; these names are the public contract)

M.FIELDS = {
  storage              = { kind = "object", what = "a storage", methods = M.STORAGE_METHODS },
  issuer               = { kind = "issuer" }, -- issue; optional revoke, storage_key, describe, renewal_info; or a list
  issuer_policy        = { kind = "enum", values = issuer.POLICIES, default = "in_order" }, -- order of a list's members
  reuse_key            = { kind = "boolean", default = false }, -- keep the private key across renewals
  profile              = { kind = "token" }, -- ACME profile (req.profile); a certificate entry's wins
  certificates         = { kind = "certificates", required = true,
                           hint = 'the certificates to manage, e.g. certificates = { "example.com" }' },
  renew_check_interval = { kind = "duration", default = "10m", min = 1 },
  ocsp_check_interval  = { kind = "duration", default = "1h", min = 1 },
  clean_interval       = { kind = "duration", default = "24h", min = 1 },
  lock_wait            = { kind = "duration", default = "5m" }, -- longest wait for a lock another instance holds
  -- the daemon's watchdog (engine/watchdog.lua; README "Watchdog and health")
  watchdog_intervals   = { kind = "integer", min = 1, max = 1000, default = 3 }, -- a pass not done in N intervals is stalled
  health_file          = { kind = "path" }, -- nil: <storage root or data dir>/health/<host>.json
  renewal_window_ratio = { kind = "ratio" }, -- nil: 1/3, or 1/2 for lifetimes < 10 days (certmaint.renewal)
  clean                = { kind = "record", default = function() return {} end, fields = {
    ocsp_staples              = { kind = "boolean", default = true },
    expired_certs             = { kind = "boolean", default = true },
    expired_cert_grace_period = { kind = "duration", default = "24h" },
  } },
  -- OCSP stapling and revocation checks (engine/ocsp.lua, engine/crl.lua; README "OCSP")
  ocsp                 = { kind = "record", default = function() return {} end, fields = {
    enabled           = { kind = "boolean", default = true },  -- false: no OCSP pass at all
    concurrency       = { kind = "integer", min = 1, max = M.MAX_OCSP_CONCURRENCY, default = 16 }, -- fetches at once
    timeout           = { kind = "duration", min = 1, default = "10s" }, -- each OCSP or CRL fetch, overall
    max_response_size = { kind = "integer", min = 1024, max = 1024 * 1024, default = 65536 }, -- bytes of an OCSP answer
    skew              = { kind = "duration", default = "5m" }, -- clock difference allowed to a thisUpdate
    crl_checks        = { kind = "boolean", default = true },  -- CRLs for certificates naming no responder
    max_crl_size      = { kind = "integer", min = 1024, max = 32 * 1024 * 1024, default = 32 * 1024 * 1024 },
    staple_files      = { kind = "paths" }, -- PEM chains of servers certmaint does not manage, stapled only
    verified_memo     = { kind = "path_or_false" }, -- signatures checked already; nil: <root>/cache/<host>.ocsp-verified
  } },
  -- the new-order budget per CA account (engine/order_budget.lua; README "Renewal storms");
  -- nil: Let's Encrypt's limits for ACME issuers, none for others
  order_budget         = { kind = "record", fields = {
    enabled             = { kind = "boolean", default = true },
    orders_per_window   = { kind = "integer", min = 1, default = 300 },   -- new orders per account per window
    window              = { kind = "duration", min = 1, default = "3h" },
    per_domain          = { kind = "integer", min = 1, default = 50 },    -- orders per registered domain per window
    per_domain_window   = { kind = "duration", min = 1, default = "168h" },
    renewals_per_domain = { kind = "boolean", default = false }, -- count renewals against per_domain (LE does not)
    public_suffix_list  = { kind = "path_or_false", default = "/usr/share/publicsuffix/public_suffix_list.dat" },
    registered_domain   = { kind = "hook" }, -- (name) -> the domain its per_domain count goes to
  } },
  key_type             = { kind = "enum", values = M.KEY_TYPES, default = "p256" },
  concurrency          = { kind = "integer", min = 1, max = M.MAX_CONCURRENCY, default = 8 },
  -- limits on the policy's hooks (certmaint.hooks; README "Policy limits"); nil: the defaults there
  hook_limits          = { kind = "record", default = function() return {} end, fields = {
    decision_time = { kind = "duration", min = 1 }, -- running time of one needs_renewal/allow_name/on_revoked call
    event_time    = { kind = "duration", min = 1 }, -- running time of one on_tick/on_renewed/on_error call
    memory        = { kind = "integer", min = 1024 * 1024 }, -- bytes a call may add, and the policy may keep
  } },
  -- Prometheus metrics (engine/metrics.lua, certmaint.metrics; README "Metrics"); nil: none
  metrics              = { kind = "record", check = metrics_check, fields = {
    listen       = { kind = "listen" },  -- "127.0.0.1:9464": `certmaint run` serves GET /metrics there
    textfile     = { kind = "path" },    -- node_exporter's textfile collector: rewritten after each pass
    allow_remote = { kind = "boolean", default = false }, -- let listen be a non-loopback address
  } },
  log                  = { kind = "record", default = function() return {} end, fields = {
    format = { kind = "enum", values = M.LOG_FORMATS, default = "text" },
    level  = { kind = "enum", values = M.LOG_LEVELS, default = "info" },
  } },
  -- decisions
  needs_renewal        = { kind = "hook" }, -- (cert, now) -> bool
  on_revoked           = { kind = "hook" }, -- (cert, ocsp) -> "renew" | "remove" | "keep"
  allow_name           = { kind = "hook" }, -- (name) -> bool: may this name be managed at run time
  -- events
  on_tick              = { kind = "hook" }, -- (tick)
  on_renewed           = { kind = "hook" }, -- (cert)
  on_error             = { kind = "hook" }, -- (err)
  -- notifications (engine/alerts.lua; README "Notifications"): told once per problem
  -- each a function or a list of them (each called on its own)
  on_failure           = { kind = "hooks" }, -- (cert, failure): a renewal or a deploy failed
  on_expiring          = { kind = "hooks" }, -- (cert, info): within notify.expiring_before/expiring_ratio of expiry
  on_recovered         = { kind = "hooks" }, -- (cert, info): a problem told of healed
  notify               = { kind = "record", default = function() return {} end, fields = {
    repeat_interval = { kind = "duration", min = 1, default = "24h" }, -- a problem still open is told again after this
    expiring_before = { kind = "duration", min = 1, default = "7d" },  -- expiring: at most this long before not_after ...
    expiring_ratio  = { kind = "ratio", default = 1 / 6 },             -- ... and at most this share of the lifetime
    concurrency     = { kind = "integer", min = 1, max = 64, default = 4 }, -- hooks running at once
  } },
}

-- Fields checked before the others because other checks use them.
local FIRST = { key_type = true }

----------------------------------------------------------------------------
-- Where the call came from

local function frame_path(info)
  if info.source:sub(1, 1) == "@" then return info.source:sub(2) end
  return info.short_src
end

--- "file:line" of the Lua frame at `level` (as for error(): 1 is the function
-- calling where, 2 its caller), C frames (pcall) skipped; "?" when there is none.
function M.where(level)
  level = (level or 1) + 1
  local info = debug.getinfo(level, "Sl")
  while info and info.what == "C" do
    level = level + 1
    info = debug.getinfo(level, "Sl")
  end
  if not info then return "?" end
  if info.currentline > 0 then return frame_path(info) .. ":" .. info.currentline end
  return frame_path(info)
end

----------------------------------------------------------------------------
-- API

-- The code of one line: strings emptied, a trailing comment dropped (long
-- strings and comments are not followed: the search below then finds
-- nothing or too little, and the call's line is kept).
local function code_of(text)
  text = text:gsub("\\.", "")
  text = text:gsub('"[^"]*"', '""'):gsub("'[^']*'", "''")
  return (text:gsub("%-%-.*$", ""))
end

--- The line of field `path` ("renew_windwo", "clean.expired_cert_grace",
-- "certificates[2].key_type") in the table constructor of the call at
-- `source` ("file:line"), or nil. Lua keeps no line per table field, so the
-- file is read: from the call's `policy {` to the brace closing its table,
-- the first `key =` at the table's own depth, then the path's next key
-- inside that key's table (a [n] index ends the search: the entry's field is
-- reported at its list's line). nil when the call has no constructor (a
-- table built elsewhere), the file cannot be read or the key is not there.
local FIELD_LINE_MAX_BYTES = 1024 * 1024
local function field_line(source, path)
  local file, call_line = source:match("^(.*):(%d+)$")
  if not file or type(path) ~= "string" then return nil end
  call_line = tonumber(call_line)
  local keys = {}
  for part in path:gmatch("[^.]+") do
    local name, index = part:match("^([%a_][%w_]*)(.*)$")
    if not name then break end
    keys[#keys + 1] = name
    if index ~= "" then break end
  end
  if #keys == 0 then return nil end
  local f = io.open(file, "r")
  if not f then return nil end
  local src = f:read(FIELD_LINE_MAX_BYTES)
  f:close()
  if not src then return nil end
  local n, depth, want, found, started = 0, 0, 1, nil, false
  for text in (src .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if n >= call_line then
      local code = code_of(text)
      if n == call_line then
        local at = code:find("policy%s*%(?%s*{")
        if not at then return nil end
        code = code:sub(at + #"policy")
      end
      local pos = 1
      while pos <= #code do
        local c = code:sub(pos, pos)
        if c == "{" then
          depth, started, pos = depth + 1, true, pos + 1
        elseif c == "}" then
          depth, pos = depth - 1, pos + 1
          if started and (depth == 0 or depth < want - 1) then return found end
        else
          local s, e = code:find("^[%a_][%w_]*", pos)
          if s then
            if depth == want and code:sub(s, e) == keys[want] and code:find("^%s*=", e + 1)
               and not code:find("^%s*==", e + 1) then
              found, want = n, want + 1
              if want > #keys then return found end
            end
            pos = e + 1
          else
            pos = pos + 1
          end
        end
      end
    end
  end
  return found
end

local function raise(source, err)
  local line = field_line(source, err.path)
  if line then source = source:gsub(":%d+$", ":" .. line) end
  local msg
  if err.path then
    msg = string.format("policy field %q %s", err.path, err.msg)
    if not err.msg:find("^is ") and not err.msg:find("^has ") then
      msg = string.format("policy field %q: %s", err.path, err.msg)
    end
  else
    msg = "policy " .. err.msg
  end
  error(source .. ": " .. msg, 0)
end

local function validate(spec, source)
  if type(spec) ~= "table" then
    error(source .. ": certmaint.policy expects a table { certificates = ..., ... }, got " .. describe(spec), 0)
  end
  local bad = unknown_key(spec, nil, M.FIELDS)
  if bad then raise(source, bad) end
  local names = keys_of(M.FIELDS)
  local P = {}
  local ctx = {}
  local order = {}
  for _, k in ipairs(names) do
    if FIRST[k] then table.insert(order, 1, k) else order[#order + 1] = k end
  end
  for _, k in ipairs(order) do
    local field = M.FIELDS[k]
    local v = spec[k]
    if v == nil then
      if field.required then
        raise(source, field_error(k, "is required" .. (field.hint and (" (" .. field.hint .. ")") or "")))
      end
      v = field.default
      if type(v) == "function" then v = v() end
    end
    if v ~= nil then
      local res, err = KINDS[field.kind](v, field, k, ctx)
      if err then raise(source, err) end
      P[k] = res
      if k == "key_type" then ctx.key_type = res end
    end
  end
  P.source = source
  return setmetatable(P, POLICY_MT)
end

--- Validate `spec` as made at `source` ("file:line", used in errors and as
-- P.source). An already validated policy is returned as it is.
function M.validate(spec, source)
  if type(source) ~= "string" then error("policy.validate: source must be a string", 2) end
  if M.is_policy(spec) then return spec end
  return validate(spec, source)
end

--- Is v a table made by this module?
function M.is_policy(v)
  return type(v) == "table" and getmetatable(v) == POLICY_MT
end

--- Load a policy file: compile it as text with `env` (default: the normal
-- globals; a daemon loads policies through certmaint.sandbox instead), run it, and return the validated policy, or nil, message, code
-- ("load" when the file cannot be read or compiled, "policy" when running it
-- or validating it fails). Every message names the file (and line).
-- A file may also return a plain table; it is validated here.
function M.load(path, env)
  local f, oerr = io.open(path, "r")
  if not f then return nil, "cannot open policy " .. tostring(oerr), "load" end
  local src = f:read("a")
  f:close()
  local chunk, err = load(src, "@" .. path, "t", env or _ENV)
  if not chunk then return nil, err, "load" end
  local ok, res = pcall(chunk)
  if not ok then return nil, tostring(res), "policy" end
  if M.is_policy(res) then return res end
  if type(res) == "table" then
    local vok, P = pcall(validate, res, path)
    if not vok then return nil, tostring(P), "policy" end
    return P
  end
  return nil, path .. ": the policy file must return certmaint.policy { ... } (it returned " .. type(res) .. ")", "policy"
end

--- A resolved view of the renewal options for certmaint.renewal.
function M.renewal_opts(P)
  return {
    ratio = P.renewal_window_ratio,
    explicit_ratio = P.renewal_window_ratio ~= nil,
    check_interval = P.renew_check_interval,
  }
end

return setmetatable(M, {
  __call = function(_, spec, level)
    if level ~= nil and (math.type(level) ~= "integer" or level < 1) then
      error("certmaint.policy: level must be a positive integer", 2)
    end
    level = level or 2
    -- a wrapper that tail-called us (level 3: "my caller's caller") has left
    -- the stack, so its caller is one frame nearer
    if level > 2 and debug.getinfo(1, "t").istailcall then level = level - 1 end
    local source = M.where(level)
    if M.is_policy(spec) then return spec end
    return validate(spec, source)
  end,
})
