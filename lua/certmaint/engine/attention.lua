--- What needs an operator's attention (`status --check`, a monitoring check):
-- read-only, over the status rows.
--
-- A certificate needs attention when it
--   - is not in storage (never obtained, or unreadable),
--   - has expired,
--   - expires inside its imminent-expiry guard (the default rule's last layer:
--     max(lifetime / 50, 5 renew checks)),
--   - is past its renewal time by more than two renew check intervals (its
--     window passed without a renewal: no daemon running, or one failing),
--   - has a last error (a renewal that failed, a policy hook failing),
--   - had its last deploy fail, or a deploy target serves an older serial,
--   - is Must-Staple and has no valid staple (none, or past its nextUpdate):
--     clients refuse it (engine/must_staple.lua).
-- A policy hook that fails while status evaluates it counts as well.
local core = require "certmaint.core"
local rfc3339 = require "certmaint.rfc3339"
local must_staple = require "certmaint.engine.must_staple"

local M = {}

M.OVERDUE_CHECKS = 2 -- renew check intervals a due renewal may take before it needs attention

--- What is wrong with row (a status row) at `now`, each finding as
-- { text =, cell =, level = }: text the short reason (status --check's),
-- cell the status table's column it is about ("left", "renew", "staple",
-- "deployed", "error") and level "red" (expired, overdue, failing, not
-- served) or "yellow" (expiring soon, a warning). A renewal that is due but
-- not yet overdue is a finding too, with no text (it needs no one yet:
-- status colours it yellow, --check says nothing).
function M:findings(row, now)
  local out = {}
  local function add(cell, level, text) out[#out + 1] = { cell = cell, level = level, text = text } end
  if not row.not_after then
    add("renew", "red", row.last_error or "no certificate in storage")
    add("error", "red", nil)
    return out
  end
  if now > row.not_after then
    add("left", "red", "expired " .. rfc3339.iso(row.not_after))
  else
    -- the default rule's imminent-expiry guard (core/renewal.c, its last layer)
    if now > row.not_after - core.renewal_guard(row.not_before, row.not_after, self.policy.renew_check_interval) then
      add("left", "yellow", "expires " .. rfc3339.iso(row.not_after) .. ", inside its guard")
    elseif row.renewal_at and row.renewal_at ~= math.huge
      and now > row.renewal_at + M.OVERDUE_CHECKS * self.policy.renew_check_interval then
      add("renew", "red", "renewal overdue since " .. rfc3339.iso(row.renewal_at))
    elseif row.renewal_due then
      add("renew", "yellow", nil)
    end
  end
  if row.must_staple and now < row.not_after then
    local why = must_staple.staple_problem(row.ocsp, now)
    if why then add("staple", "red", "must-staple with " .. why) end -- clients refuse it unstapled
  end
  if row.ocsp and row.ocsp.status == "revoked" then add("staple", "red", nil) end
  if row.last_error then add("error", "red", "last error: " .. row.last_error) end
  for _, d in ipairs(row.deploy or {}) do
    if d.state == "failed" then
      add("deployed", "red", "deploy to " .. d.target .. " failed: " .. tostring(d.error))
    elseif d.state == "outdated" then
      add("deployed", "yellow", d.target .. " has an older certificate (" .. tostring(d.serial) .. ")")
    end
  end
  return out
end

--- The reasons row (a status row) needs attention at `now`: a list of short
-- texts, empty when all is well.
function M:attention(row, now)
  local out = {}
  for _, f in ipairs(self:findings(row, now)) do
    if f.text then out[#out + 1] = f.text end
  end
  return out
end

--- The colour of each cell of row's line in the status table: cell -> "red"
-- | "yellow" (absent: as it is), "names" the worst of them.
function M:cell_levels(row, now)
  local levels = {}
  for _, f in ipairs(self:findings(row, now)) do
    if levels[f.cell] ~= "red" then levels[f.cell] = f.level end
    if levels.names ~= "red" then levels.names = f.level end
  end
  return levels
end

--- The whole check at `now`: { certificates = n, attention = { { name =,
-- reasons = {...} }, ... }, hook_errors = n } (hook_errors: policy hook calls
-- that failed while the rows were built: status asks needs_renewal per row).
function M:health(now)
  now = now or core.now()
  local errors_before = self.hooks.errors
  self:attach_stored_must_staples(now) -- (no OCSP pass in a one-shot check)
  local result = { certificates = 0, attention = {} }
  self:status_rows(now, function(row)
    result.certificates = result.certificates + 1
    local reasons = self:attention(row, now)
    if #reasons > 0 then result.attention[#result.attention + 1] = { name = row.names[1], reasons = reasons } end
  end)
  result.hook_errors = self.hooks.errors - errors_before
  return result
end

return M
