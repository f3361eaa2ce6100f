-- A scrape (or textfile) against `certmaint status --json` (tests/integration/metrics.sh):
--   lua5.4 metrics_compare.lua STATUS_JSON EXPOSITION
-- checks, for every status row, that the exposition's expiry, not-before and
-- renewal-due timestamps are the row's not_after, not_before and renewal_at,
-- that last_renewal_success and last_deploy_success, where present (once
-- with nothing due makes no attempt), are 1 when the row shows
-- no error and a deployed target, and that certmaint_certificates counts the
-- rows; every other line must be a # HELP/# TYPE line or a sample. Prints one
-- "mismatch: ..." line per difference, then "rows=<n> series=<m>
-- acme_finalize_2xx=<k> acme_order_2xx=<o>" (what the script compares with
-- Pebble's log); exits 1 on a mismatch.
local core = require "certmaint.core"
local rfc3339 = require "certmaint.rfc3339"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local rows = assert(core.json_decode(read(arg[1])))
local text = read(arg[2])
local bad = 0
local function mismatch(fmt, ...)
  bad = bad + 1
  print("mismatch: " .. string.format(fmt, ...))
end

-- name -> labels -> value; typed families
local samples, types, series = {}, {}, 0
for line in text:gmatch("([^\n]*)\n") do
  local name, kind = line:match("^# TYPE (%S+) (%S+)$")
  if name then
    types[name] = kind
  elseif not line:match("^# HELP %S+ .+$") then
    local sname, labels, value = line:match("^([%a_:][%w_:]*){(.*)} (%S+)$")
    if not sname then sname, value = line:match("^([%a_:][%w_:]*) (%S+)$") end
    if not sname or not (tonumber(value) or value == "+Inf") then
      mismatch("not an exposition line: %q", line)
    else
      series = series + 1
      local l = {}
      for k, v in (labels or ""):gmatch('([%a_][%w_]*)="([^"]*)"') do l[k] = v end
      samples[sname] = samples[sname] or {}
      table.insert(samples[sname], { labels = l, value = tonumber(value) or math.huge })
    end
  end
end

local function get(name, labels)
  for _, s in ipairs(samples[name] or {}) do
    local ok = true
    for k, v in pairs(labels) do if s.labels[k] ~= v then ok = false end end
    if ok then return s.value, s end
  end
  return nil
end

local function want_equal(what, name, got, expected)
  if got ~= expected then mismatch("%s of %s: metrics %s, status %s", what, name, tostring(got), tostring(expected)) end
end

want_equal("count", "all", get("certmaint_certificates", {}), #rows)
for _, r in ipairs(rows) do
  local name = r.names[1]
  local l = { name = name }
  local exp, s = get("certmaint_certificate_expiry_timestamp_seconds", l)
  want_equal("expiry", name, exp, rfc3339.parse(r.not_after))
  if s and s.labels.issuer ~= r.issuer then mismatch("issuer label of %s: %q, status %q", name, s.labels.issuer, r.issuer) end
  want_equal("not_before", name, get("certmaint_certificate_not_before_timestamp_seconds", l), rfc3339.parse(r.not_before))
  want_equal("renewal due", name, get("certmaint_certificate_renewal_due_timestamp_seconds", l), rfc3339.parse(r.renewal_at))
  -- results: absent when this process made no attempt (once, with nothing due)
  if r.last_error == core.json_null or r.last_error == nil then
    local ok = get("certmaint_certificate_last_renewal_success", l)
    if ok ~= nil then want_equal("last renewal success", name, ok, 1) end
    want_equal("renewal failures", name, get("certmaint_certificate_renewal_failures", l), 0)
  end
  if type(r.deploy) == "table" and r.deploy[1] and r.deploy[1].state == "deployed" then
    local ok = get("certmaint_certificate_last_deploy_success", l)
    if ok ~= nil then want_equal("last deploy success", name, ok, 1) end
  end
end
for _, f in ipairs { "certmaint_certificate_expiry_timestamp_seconds", "certmaint_acme_request_duration_seconds",
  "certmaint_pass_duration_seconds", "certmaint_lock_waits_total", "certmaint_lua_memory_bytes" } do
  if not types[f] then mismatch("no # TYPE line for %s", f) end
end
print(string.format("rows=%d series=%d acme_finalize_2xx=%d acme_order_2xx=%d", #rows, series,
  get("certmaint_acme_request_duration_seconds_count", { type = "finalize", result = "2xx" }) or 0,
  get("certmaint_acme_request_duration_seconds_count", { type = "order", result = "2xx" }) or 0))
os.exit(bad == 0 and 0 or 1)
