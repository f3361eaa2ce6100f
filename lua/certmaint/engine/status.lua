--- What `status` shows and what `check` plans: read-only views of the engine.
local core = require "certmaint.core"
local certset = require "certmaint.certset"
local rfc3339 = require "certmaint.rfc3339"

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

--- One status row per managed entry (the facts `status` prints; `deploy`
-- is engine/deploy.lua's deploy_status, nil without on_renewed): a list,
-- or with each_row given, each_row(row) called per row and nothing kept.
-- The facts come from the cache as values (cache:facts), not as a copied
-- certificate table: this is the per-certificate cost of `status`.
function M:status_rows(now, each_row)
  now = now or core.now()
  local saved = self:load_states()
  local deploys = #self:deploy_targets() > 0 and self:load_deploy_records() or nil
  local hook = self.policy.needs_renewal
  local cache, jobs, ropts = self.cache, self.jobs, self.renewal_opts
  local rows = {}
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local row = { names = e.names, managed = true, on_demand = e.on_demand, renewal_due = false }
    local id = e.id
    local issuer, serial, nb, na, renew_at, _, _, _, staple, this_update, next_update
    if id then issuer, serial, nb, na, renew_at, _, _, _, staple, this_update, next_update = cache:facts(id) end
    if issuer then
      row.issuer, row.serial, row.not_before, row.not_after, row.renewal_at = issuer, serial, nb, na, renew_at
      if staple then row.ocsp = { status = staple, this_update = this_update, next_update = next_update } end
      if hook then
        row.renewal_due = (self:needs_renewal(cache:get(id, { pem = false }), now))
      else
        row.renewal_due = (core.needs_renewal(nb, na, now, ropts)) -- the rule the cache used
      end
    end
    local st = jobs:status("renew:" .. primary) or saved[primary]
    if st then
      row.last_error, row.attempts, row.next_attempt = st.last_error, st.attempts, st.next_attempt
    end
    if not row.last_error and not issuer then row.last_error = "no certificate in storage" end
    if deploys then row.deploy = self:deploy_status(primary, serial, deploys) end
    if each_row then each_row(row) else rows[#rows + 1] = row end
  end
  return rows
end

--- What the next passes would do at `at` (check --at): changes nothing (it
-- loads storage into the cache, but finishes no interrupted commit).
function M:plan(at)
  self:load_all { recover = false }
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
      local t = self:renewal_time(c)
      row.not_after = c.not_after
      if not t then
        row.action, row.when, row.why = "error", at, "needs_renewal hook failed"
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
