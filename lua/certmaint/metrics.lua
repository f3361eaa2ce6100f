--- certmaint.metrics: Prometheus text exposition (format 0.0.4) of what the
-- engine knows, for a scrape (policy.metrics.listen) or node_exporter's
-- textfile collector (policy.metrics.textfile).
--
--   metrics.render(engine) -> text           every family, # HELP and # TYPE
--   metrics.acme_request(kind, result, secs)  one ACME request (acme/client.lua)
--   metrics.check_listen(addr, allow_remote)  -> true | nil, why
--   metrics.escape(value)                     a label value, escaped
--
-- Labels are bounded by construction: per certificate `name` (the first
-- name) and `issuer` (the issuer's subject), one series per managed
-- certificate by design; every other label takes values from a set fixed
-- in the code (pass kinds, ACME request types named by acme/client.lua's
-- failpoints, HTTP status classes, lock results).
--
-- A render is one table of lines and one table.concat: at 100k
-- certificates the per-certificate families are the cost, one
-- string.format a series, each entry's label text made once and shared.
local core = require "certmaint.core"

local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- Upper bounds (seconds) of the ACME latency histogram: a nonce HEAD takes
-- milliseconds, a finalize at a busy CA seconds.
M.ACME_BUCKETS = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }

-- ACME request types (acme/client.lua's failpoint names without "acme.");
-- anything else (revocation, renewalInfo) counts as "other", so a new call
-- site can never add a label value by accident.
M.ACME_TYPES = {
  directory = true, nonce = true, account = true, order = true, authz = true, challenge = true,
  poll = true, finalize = true, certificate = true,
}

----------------------------------------------------------------------------
-- process-wide ACME request counts (one ACME client per issuer, many per
-- process: the counts are the process's)

local acme = {} -- "type\0result" -> { type, result, count, sum, buckets = {...} }
local acme_order = {}

--- The result label of a finished request: the HTTP status class, or
-- "network" when no answer came.
function M.acme_result(status)
  if type(status) ~= "number" then return "network" end
  local class = math.floor(status / 100)
  if class < 1 or class > 5 then return "network" end
  return class .. "xx"
end

--- Count one ACME request of kind (a failpoint name such as "acme.order",
-- or nil) with result (M.acme_result) that took seconds.
function M.acme_request(kind, result, seconds)
  local t = type(kind) == "string" and kind:match("^acme%.(.+)$") or "other"
  if not M.ACME_TYPES[t] then t = "other" end
  local key = t .. "\0" .. result
  local s = acme[key]
  if not s then
    local b = {}
    for i = 1, #M.ACME_BUCKETS do b[i] = 0 end
    s = { type = t, result = result, count = 0, sum = 0, buckets = b }
    acme[key] = s
    acme_order[#acme_order + 1] = key
    table.sort(acme_order)
  end
  if not (seconds >= 0) then seconds = 0 end -- NaN or a clock oddity
  s.count, s.sum = s.count + 1, s.sum + seconds
  for i, le in ipairs(M.ACME_BUCKETS) do
    if seconds <= le then s.buckets[i] = s.buckets[i] + 1 end
  end
end

--- Forget the ACME counts (specs).
function M.reset()
  acme, acme_order = {}, {}
end

----------------------------------------------------------------------------
-- text

--- A label value as the exposition format wants it: \ " and newline escaped.
function M.escape(v)
  v = tostring(v)
  if not v:find('[\\"\n]') then return v end
  return (v:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

--- A sample value: integers as integers, infinities as +Inf/-Inf.
function M.value(v)
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v ~= v then return "NaN" end
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%d", v) end
  local s = string.format("%.15g", v) -- 0.1 as 0.1; %.17g only where that loses the value
  if tonumber(s) ~= v then s = string.format("%.17g", v) end
  return s
end
local value = M.value

local function family(out, name, kind, help)
  out[#out + 1] = "# HELP " .. name .. " " .. help
  out[#out + 1] = "# TYPE " .. name .. " " .. kind
end

local function sample(out, name, labels, v)
  if labels then
    out[#out + 1] = name .. "{" .. labels .. "} " .. value(v)
  else
    out[#out + 1] = name .. " " .. value(v)
  end
end

-- The per-certificate families, in the order rendered: name, help, and the
-- column of the row it reads (rows are made once per entry, below).
M.CERT_FAMILIES = {
  { "certmaint_certificate_expiry_timestamp_seconds", "not_after",
    "When the certificate expires (its notAfter), Unix seconds." },
  { "certmaint_certificate_not_before_timestamp_seconds", "not_before",
    "When the certificate became valid (its notBefore), Unix seconds." },
  { "certmaint_certificate_renewal_due_timestamp_seconds", "renew_at",
    "When the certificate is due for renewal (ARI window or renewal window), Unix seconds; +Inf: never." },
  { "certmaint_certificate_renewal_failures", "attempts",
    "Failed renewal attempts since the last success (0: none failing)." },
  { "certmaint_certificate_last_renewal_timestamp_seconds", "renewal_time",
    "When this daemon last tried to obtain or renew the certificate, Unix seconds (absent: not yet)." },
  { "certmaint_certificate_last_renewal_success", "renewal_ok",
    "1 if this daemon's last renewal attempt of the certificate succeeded, 0 if it failed (absent: none yet)." },
  { "certmaint_certificate_last_deploy_timestamp_seconds", "deploy_time",
    "When this daemon last deployed the certificate (on_renewed), Unix seconds (absent: not yet)." },
  { "certmaint_certificate_last_deploy_success", "deploy_ok",
    "1 if the last deploy of the certificate succeeded, 0 if it failed (absent: none yet)." },
  { "certmaint_certificate_ocsp_next_update_timestamp_seconds", "next_update",
    "nextUpdate of the certificate's OCSP staple, Unix seconds (absent: no staple)." },
  { "certmaint_certificate_ari_window_start_timestamp_seconds", "ari_start",
    "Start of the CA's suggested renewal window (ARI, RFC 9773), Unix seconds (absent: none)." },
  { "certmaint_certificate_ari_window_end_timestamp_seconds", "ari_end",
    "End of the CA's suggested renewal window (ARI, RFC 9773), Unix seconds (absent: none)." },
}

-- The columns of every managed entry with a cached certificate: one
-- cache:facts call each; labels made once per entry.
local function cert_columns(engine)
  local cols = { labels = {} }
  for _, f in ipairs(M.CERT_FAMILIES) do cols[f[2]] = {} end
  local labels = cols.labels
  local entries, cache, ari = engine.entries, engine.cache, engine.ari or {}
  local n = 0
  for _, primary in ipairs(engine.order) do
    local e = entries[primary]
    local id = e.id
    local issuer, _, nb, na, renew_at, _, attempts, _, _, _, next_update
    if id then issuer, _, nb, na, renew_at, _, attempts, _, _, _, next_update = cache:facts(id) end
    -- an entry without a certificate still shows its renewal attempts
    if issuer or e.renewal_time then
      n = n + 1
      labels[n] = 'name="' .. M.escape(primary) .. '",issuer="' .. M.escape(issuer or "") .. '"'
      -- whole seconds, as status shows it (the renewal point is fractional inside its window)
      if renew_at and renew_at ~= math.huge and renew_at == renew_at then renew_at = math.floor(renew_at) end
      cols.not_after[n], cols.not_before[n], cols.renew_at[n] = na, nb, renew_at
      if not attempts then -- no certificate: the job's count (one status lookup, rare)
        local st = engine.jobs and engine.jobs:status("renew:" .. primary)
        attempts = st and st.last_error and st.attempts or 0
      end
      cols.attempts[n] = attempts
      cols.renewal_time[n] = e.renewal_time
      if e.renewal_time then cols.renewal_ok[n] = e.renewal_ok and 1 or 0 end
      cols.deploy_time[n] = e.deploy_time
      if e.deploy_time then cols.deploy_ok[n] = e.deploy_ok and 1 or 0 end
      cols.next_update[n] = next_update
      local rec = id and ari[id]
      if rec then cols.ari_start[n], cols.ari_end[n] = rec.start, rec["end"] end
    end
  end
  cols.n = n
  return cols
end

local function render_certs(out, engine)
  local cols = cert_columns(engine)
  local labels, n = cols.labels, cols.n
  local fmt = string.format
  for _, f in ipairs(M.CERT_FAMILIES) do
    local name, col = f[1], cols[f[2]]
    family(out, name, "gauge", f[3])
    for i = 1, n do
      local v = col[i]
      if v ~= nil then
        if math.type(v) == "integer" then
          out[#out + 1] = fmt("%s{%s} %d", name, labels[i], v)
        else
          out[#out + 1] = name .. "{" .. labels[i] .. "} " .. value(v)
        end
      end
    end
  end
end

local function render_passes(out, engine)
  local passes = engine.pass_stats or {}
  local kinds = {}
  for k in pairs(passes) do kinds[#kinds + 1] = k end
  table.sort(kinds)
  family(out, "certmaint_pass_duration_seconds", "summary", "Time the passes took, by kind (renew, ocsp, clean).")
  for _, k in ipairs(kinds) do
    sample(out, "certmaint_pass_duration_seconds_sum", 'kind="' .. k .. '"', passes[k].seconds)
    sample(out, "certmaint_pass_duration_seconds_count", 'kind="' .. k .. '"', passes[k].count)
  end
  family(out, "certmaint_pass_last_duration_seconds", "gauge", "Time the last pass of each kind took.")
  for _, k in ipairs(kinds) do sample(out, "certmaint_pass_last_duration_seconds", 'kind="' .. k .. '"', passes[k].last_seconds) end
  family(out, "certmaint_pass_last_completion_timestamp_seconds", "gauge", "When the last pass of each kind finished, Unix seconds.")
  for _, k in ipairs(kinds) do sample(out, "certmaint_pass_last_completion_timestamp_seconds", 'kind="' .. k .. '"', passes[k].last_at) end
  family(out, "certmaint_pass_last_count", "gauge",
    "What the last pass of each kind counted (the tick's counts: due, queued, renewed, failed, fetched, deleted, ...).")
  for _, k in ipairs(kinds) do
    local counts = passes[k].counts
    local names = {}
    for c in pairs(counts) do names[#names + 1] = c end
    table.sort(names)
    for _, c in ipairs(names) do
      sample(out, "certmaint_pass_last_count", 'kind="' .. k .. '",count="' .. M.escape(c) .. '"', counts[c])
    end
  end
end

local function render_acme(out)
  local name = "certmaint_acme_request_duration_seconds"
  family(out, name, "histogram", "ACME requests by type and result (HTTP status class, or network), and their latency.")
  for _, key in ipairs(acme_order) do
    local s = acme[key]
    local l = 'type="' .. s.type .. '",result="' .. s.result .. '"'
    for i, le in ipairs(M.ACME_BUCKETS) do
      sample(out, name .. "_bucket", l .. ',le="' .. value(le) .. '"', s.buckets[i])
    end
    sample(out, name .. "_bucket", l .. ',le="+Inf"', s.count)
    sample(out, name .. "_sum", l, s.sum)
    sample(out, name .. "_count", l, s.count)
  end
end

local function render_locks(out, engine)
  local w = engine.lock_stats or {}
  family(out, "certmaint_lock_waits_total", "counter",
    "Waits for a storage lock another instance held, by how they ended (acquired, timeout, error).")
  for _, r in ipairs { "acquired", "timeout", "error" } do
    sample(out, "certmaint_lock_waits_total", 'result="' .. r .. '"', w[r] or 0)
  end
  family(out, "certmaint_lock_wait_seconds", "summary", "Time spent waiting for storage locks another instance held.")
  sample(out, "certmaint_lock_wait_seconds_sum", nil, w.seconds or 0)
  sample(out, "certmaint_lock_wait_seconds_count", nil, w.count or 0)
  family(out, "certmaint_lock_waiting", "gauge", "Renewals waiting for a storage lock now.")
  sample(out, "certmaint_lock_waiting", nil, engine.lock_waiters or 0)
  family(out, "certmaint_locks_held", "gauge", "Storage locks this instance holds now.")
  sample(out, "certmaint_locks_held", nil, engine.locks_held or 0)
end

--- The exposition of engine's state: a string ending in a newline.
function M.render(engine)
  local out = {}
  family(out, "certmaint_certificates", "gauge", "Certificates the policy manages.")
  sample(out, "certmaint_certificates", nil, #engine.order)
  family(out, "certmaint_certificates_cached", "gauge", "Certificates in the cache (managed, and unmanaged ones read from storage).")
  sample(out, "certmaint_certificates_cached", nil, engine.cache:count())
  render_certs(out, engine)
  render_passes(out, engine)
  render_acme(out)
  render_locks(out, engine)
  family(out, "certmaint_lua_memory_bytes", "gauge", "Bytes of the Lua heap (collectgarbage(\"count\")).")
  sample(out, "certmaint_lua_memory_bytes", nil, math.floor(collectgarbage("count") * 1024))
  family(out, "certmaint_scrape_timestamp_seconds", "gauge", "When this exposition was made, Unix seconds.")
  sample(out, "certmaint_scrape_timestamp_seconds", nil, core.now())
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

----------------------------------------------------------------------------
-- where the endpoint may listen

--- Is addr ("HOST:PORT", as core.http_serve takes it) on the loopback
-- interface? 127.0.0.0/8, [::1] and localhost are; ":PORT", "*:PORT" and
-- any other host are not. Returns true | nil, why.
function M.check_listen(addr, allow_remote)
  if type(addr) ~= "string" then return nil, "expected \"HOST:PORT\", e.g. \"127.0.0.1:9464\"" end
  local host, port = addr:match("^%[([^%]]*)%]:(%d+)$")
  if not host then host, port = addr:match("^([^:]*):(%d+)$") end
  if not host or tonumber(port) > 65535 then
    return nil, string.format("%q is not HOST:PORT, e.g. \"127.0.0.1:9464\"", addr)
  end
  if allow_remote then return true end
  local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  local loopback = host == "localhost" or host == "::1"
    or (a == "127" and tonumber(b) <= 255 and tonumber(c) <= 255 and tonumber(d) <= 255)
  if not loopback then
    return nil, string.format("%q is not a loopback address (127.0.0.1, [::1], localhost); the metrics "
      .. "tell anyone who can connect what this machine serves: set metrics.allow_remote = true to listen there", addr)
  end
  return true
end

return M
