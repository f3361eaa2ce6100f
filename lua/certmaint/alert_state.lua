--- When to notify: the de-duplication rules of certmaint's notifications, as
-- pure functions of a record, the time and the policy's settings (no clock,
-- no storage: the engine, engine/alerts.lua, keeps and stores the records).
--
-- A record is one open problem of one certificate, of one kind ("renew",
-- "deploy", "expiring"):
--
--   { since = T0,          -- when the problem was first seen (Unix seconds)
--     notified_at = T1,    -- when the policy was last told (nil: never yet)
--     failures = N,        -- how many failures (or expiring scans) since T0
--     message = "...", code = "..." }  -- the latest
--
-- The first failure notifies; further failures of the same kind are counted
-- and notify again only once repeat_interval has passed since the last
-- notice (a reminder, info.repeat = true). When the problem heals, the
-- record goes and a recovery is told once, if a notice was ever sent.
local M = {}

M.DEFAULT_REPEAT_INTERVAL = 24 * 3600
M.DEFAULT_EXPIRING_BEFORE = 7 * 24 * 3600
M.DEFAULT_EXPIRING_RATIO = 1 / 6

M.KINDS = { renew = true, deploy = true, expiring = true }

--- A failure (or expiring scan) of a kind at `now`. rec: the open record, or
-- nil. Returns the updated record (a new table when rec was nil) and what to
-- tell: "first", "repeat" or nil (nothing: already told within the interval).
function M.failed(rec, now, repeat_interval, message, code)
  if type(now) ~= "number" then error("alert_state.failed: now must be a number", 2) end
  repeat_interval = repeat_interval or M.DEFAULT_REPEAT_INTERVAL
  if not rec then
    rec = { since = now, failures = 0 }
  end
  rec.failures = (rec.failures or 0) + 1
  rec.message, rec.code = message, code
  local tell
  if not rec.notified_at then
    tell = "first"
  elseif now - rec.notified_at >= repeat_interval then
    tell = "repeat"
  elseif now < rec.notified_at then
    -- the wall clock went back past the last notice: count from now, do not page
    rec.notified_at = now
  end
  if tell then rec.notified_at = now end
  return rec, tell
end

--- The problem healed. Returns true when a recovery is to be told (a notice
-- was sent for it); the caller drops the record either way.
function M.healed(rec)
  return rec ~= nil and rec.notified_at ~= nil
end

--- Seconds before not_after at which a certificate counts as expiring: the
-- smaller of `before` and `ratio` of its lifetime (7 days, 1/6: a 90-day
-- certificate 7 days before expiry, a 6-day one 1 day before; both well after
-- the default renewal window opened at 1/3).
function M.expiring_threshold(cert, before, ratio)
  before = before or M.DEFAULT_EXPIRING_BEFORE
  ratio = ratio or M.DEFAULT_EXPIRING_RATIO
  local lifetime = (cert.not_after or 0) - (cert.not_before or 0)
  if lifetime <= 0 then return before end
  return math.min(before, lifetime * ratio)
end

--- Is cert expiring at `now`? Returns the answer, the seconds left, the threshold.
function M.is_expiring(cert, now, before, ratio)
  local threshold = M.expiring_threshold(cert, before, ratio)
  local left = cert.not_after - now
  return left <= threshold, left, threshold
end

return M
