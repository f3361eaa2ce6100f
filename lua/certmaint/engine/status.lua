--- What `status` shows and what `check` plans: read-only views of the engine.
local core = require "certmaint.core"
local certset = require "certmaint.certset"
local rfc3339 = require "certmaint.rfc3339"
local keys = require "certmaint.keys"

local M = {}

--- Certificates in the cache, as the tables Lua sees.
function M:certificates()
  local out = {}
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local c = e.id and self.cache:get(e.id)
    if c then out[#out + 1] = c end
  end
  return out
end

local BATCH = 2048 -- rows made (and, for --json, written) at once

--- One-shot status runs no OCSP pass, so the cache holds no staples: take
-- each managed certificate's stored staple (certmagic's key) into the cache
-- so the rows show what a server is stapling. The daemon stores only
-- staples it verified; this read-only view only peeks at them (times and
-- status, core.ocsp_response_peek: a verify each would cost status on 100k
-- certificates seconds), and a stale one is not shown. Must-Staple
-- certificates get theirs verified first (engine/must_staple.lua), as
-- status --check judges them. Returns how many were attached.
function M:attach_stored_staples(now)
  now = now or core.now()
  local n = self:attach_stored_must_staples(now)
  local ids, wanted = {}, {}
  local function flush()
    if #wanted == 0 then return end
    local found = self.storage:load_many(wanted)
    for i, k in ipairs(wanted) do
      local der = found[k]
      local info = der and core.ocsp_response_peek(der)
      if info and info.next_update and info.next_update > now and info.this_update then
        if self.cache:set(ids[i], { ocsp = { status = info.status, this_update = info.this_update,
          next_update = info.next_update, der = der } }) then n = n + 1 end
      end
    end
    ids, wanted = {}, {}
  end
  for _, primary in ipairs(self.order) do
    local id = self.entries[primary].id
    local c = id and self.cache:get(id)
    if c and not c.ocsp and c.ocsp_urls and #c.ocsp_urls > 0 and c.names[1] then
      ids[#ids + 1], wanted[#wanted + 1] = id, keys.ocsp(c.names[1], keys.fast_hash(c.pem))
      if #wanted >= BATCH then flush() end
    end
  end
  flush()
  return n
end

-- Fields of cache:status_json's columns written as RFC 3339 times.
local TIMES = { "next_attempt" }

--- The engine's fields of the status rows of entries order[first..last], as
-- columns: ids (the cache id of each entry, false when it has none) and
-- fields (field name -> a list, row j's value at [j]). The rest of a row is
-- the certificate's, from the cache (issuer, serial, validity, renewal_at,
-- ocsp; cache:status_json writes them, status_rows reads cache:facts), and
-- renewal_due comes from the default rule there too unless a needs_renewal
-- hook decides it (then it is a column here). A new field of a status row is
-- one more column here: both outputs pick it up.
function M:status_columns(now, first, last, ctx)
  local entries, order, jobs, cache = self.entries, self.order, self.jobs, self.cache
  local hook, saved = self.policy.needs_renewal, ctx.saved
  local deploys = ctx.deploys_listed and self:load_deploy_batch(first, last, ctx.deploys_listed)
  local ids, names, managed, last_error, attempts, next_attempt = {}, {}, {}, {}, {}, {}
  local deploy = {} -- engine/deploy.lua's deploy_status: nil (null) without on_renewed
  -- with ARI windows kept, renewal_due is decided here with them (the C default rule knows none)
  local ari = not hook and self:ari_any()
  local due = (hook or ari) and {} or nil
  local j = 0
  for i = first, last do
    local e = entries[order[i]]
    j = j + 1
    local id = e.id or false
    ids[j], names[j], managed[j], attempts[j] = id, e.names, true, 0
    local st = jobs:status("renew:" .. e.primary) or saved[e.primary]
    if st then
      local a = st.attempts or 0
      last_error[j], attempts[j] = st.last_error, math.tointeger(a) or a
      if st.next_attempt and st.next_attempt > 0 then next_attempt[j] = st.next_attempt end
    end
    if not id and not last_error[j] then
      -- a damaged set is not a missing one: say what is wrong with it
      last_error[j] = e.load_error and ("the stored certificate cannot be used: " .. e.load_error)
        or "no certificate in storage"
    end
    if due then
      local d, hook_err = false, nil
      if id then
        local _
        d, _, hook_err = self:needs_renewal(cache:get(id, { pem = false }), now)
        d = d and true or false
      end
      due[j] = d
      last_error[j] = last_error[j] or hook_err -- the default rule decided (engine/renew.lua)
    end
    last_error[j] = last_error[j] or self.hooks:problem()
    if deploys then deploy[j] = self:deploy_status(e.primary, id and (select(2, cache:facts(id))), deploys) end
  end
  return ids, { names = names, managed = managed, last_error = last_error, attempts = attempts,
    next_attempt = next_attempt, renewal_due = due, deploy = deploy }
end

-- Each batch of status columns: each_batch(first, last, ids, fields). What
-- the columns need from storage is read once, here.
function M:each_status_batch(now, each_batch)
  local ctx = { saved = self:load_states(),
    deploys_listed = #self:deploy_targets() > 0 and self:deploy_records_listed() or nil }
  for first = 1, #self.order, BATCH do
    local last = math.min(first + BATCH - 1, #self.order)
    each_batch(first, last, self:status_columns(now, first, last, ctx))
  end
end

-- Columns that status --json writes in another form than the rows hold them
-- (the text table reads the rows' form): field -> function(value) -> value.
local JSON_FORMS = {}

--- A row's `deploy` (deploy_status: one table per target, times as numbers)
-- as status --json writes it: null without on_renewed, else one object per
-- target with every key present (null when unknown) and RFC 3339 times.
function JSON_FORMS.deploy(list)
  if not list then return nil end
  local null = core.json_null
  local out = {}
  for i, d in ipairs(list) do
    out[i] = {
      target = d.target, state = d.state, serial = d.serial or null,
      deployed_at = d.deployed_at and rfc3339.iso(d.deployed_at) or null, host = d.host or null,
      error = d.error or null, attempts = math.tointeger(d.attempts or 0) or d.attempts,
      next_attempt = d.next_attempt and rfc3339.iso(d.next_attempt) or null,
    }
  end
  return setmetatable(out, core.json_array_mt)
end
M.STATUS_JSON_FORMS = JSON_FORMS

--- One status row per managed entry (the facts `status` prints; `deploy`
-- is engine/deploy.lua's deploy_status, nil without on_renewed;
-- `must_staple` the certificate's TLS Feature flag): a list,
-- or with each_row given, each_row(row) called per row and nothing kept.
-- A row is the entry's status columns plus the certificate's facts from the
-- cache (cache:facts: values, no copied certificate table).
function M:status_rows(now, each_row)
  now = now or core.now()
  local cache, ropts, rows = self.cache, self.renewal_opts, {}
  local must_staple_seen = {} -- engine/must_staple.lua's flag per id, scanned once for this call
  self:each_status_batch(now, function(first, last, ids, fields)
    for j = 1, last - first + 1 do
      local row = { on_demand = self.entries[self.order[first + j - 1]].on_demand }
      for k, col in pairs(fields) do row[k] = col[j] end
      local id = ids[j]
      local issuer, serial, nb, na, renew_at, _, _, _, staple, this_update, next_update
      if id then issuer, serial, nb, na, renew_at, _, _, _, staple, this_update, next_update = cache:facts(id) end
      if issuer then
        row.issuer, row.serial, row.not_before, row.not_after, row.renewal_at = issuer, serial, nb, na, renew_at
        if staple then row.ocsp = { status = staple, this_update = this_update, next_update = next_update } end
        row.must_staple = self:is_must_staple(id, must_staple_seen)
        if row.renewal_due == nil then row.renewal_due = (core.needs_renewal(nb, na, now, ropts)) end
      end
      if row.renewal_due == nil then row.renewal_due = false end
      if each_row then each_row(row) else rows[#rows + 1] = row end
    end
  end)
  return rows
end

--- `status --json`: the rows as a JSON array (pretty, keys sorted, as
-- core.json_encode writes it), written to file (io.stdout) by
-- cache:status_json in C a batch at a time. Returns true | nil, err, code.
function M:status_json(now, file)
  now = now or core.now()
  local cache = self.cache
  local opts = { now = now, times = TIMES, file = file,
    renew = (not self.policy.needs_renewal and not self:ari_any()) and self.renewal_opts or nil }
  local ok, err, code
  if #self.order == 0 then
    ok, err, code = file:write("[]\n")
    if not ok then return nil, err, code end
    return true
  end
  ok, err, code = file:write("[\n")
  self:each_status_batch(now, function(first, _, ids, fields)
    for name, form in pairs(JSON_FORMS) do
      local col = fields[name]
      if col then
        for j = 1, #ids do if col[j] ~= nil then col[j] = form(col[j]) end end
      end
    end
    if ok and first > 1 then ok, err, code = file:write(",\n") end
    if ok then ok, err, code = cache:status_json(ids, fields, opts) end
  end)
  if ok then ok, err, code = file:write("\n]\n") end
  if not ok then return nil, err, code end
  return true
end

--- What the next passes would do at `at` (check --at): changes nothing (it
-- loads storage into the cache, but finishes no interrupted commit).
function M:plan(at)
  self:load_all { recover = false }
  self:ari_refresh(at, nil, { fetch = false }) -- the stored ARI windows, asked nothing
  local out = {}
  local grace = (self.policy.clean or {}).expired_cert_grace_period or 86400
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local c = e.id and self.cache:get(e.id, { pem = false })
    local row = { names = e.names }
    if e.load_state == "missing" or (not c and e.load_state ~= "error") then
      row.action, row.when, row.why = "obtain", at, "not in storage"
    elseif c and (e.load_state == "names_changed" or not certset.same_names(c.names, e.names)) then
      row.action, row.when, row.why = "obtain", at, "names changed (storage has " .. table.concat(c.names, ",") .. ")"
    elseif c then
      local t, hook_err = self:renewal_time(c)
      row.not_after = c.not_after
      if hook_err then
        row.action, row.when, row.why = "error", at, hook_err .. " (renew at " .. rfc3339.iso(t) .. ")"
      elseif c.not_after <= at then
        row.action, row.when, row.why = "renew", at, "expired at " .. rfc3339.iso(c.not_after)
      elseif t <= at then
        row.action, row.when, row.why = "renew", at, "due since " .. rfc3339.iso(t)
      elseif t == math.huge then
        row.action, row.when, row.why = "keep", nil, "policy never renews it"
      else
        row.action, row.when, row.why = "renew", t, "renewal window opens"
      end
    else
      row.action, row.when, row.why = "error", at, tostring(e.load_error)
    end
    out[#out + 1] = row
  end
  -- clean: unmanaged certificates in storage
  local clean_expired = (self.policy.clean or {}).expired_certs ~= false
  self:each_unmanaged_stored(function(k, facts)
    if not facts then
      out[#out + 1] = { names = { k }, action = "report", when = at, why = "cannot be parsed; never deleted" }
    elseif clean_expired then
      local t = facts.not_after + grace
      out[#out + 1] = { names = facts.names, action = "clean", when = math.max(t, at),
        why = (t <= at) and "expired and past grace period" or "expires " .. rfc3339.iso(facts.not_after) }
    end
  end, { names = true })
  return out
end

return M
