--- Retry state of failing renewals.
--
-- The job queue runs in "manual" retry mode: a failed renewal holds no
-- coroutine and no timer. Its next attempt time goes into the cache entry
-- (next_attempt, which the C due-scan honours) and the renew ticker wakes at
-- the earliest one (jobs:next_wakeup), so the cache is the one schedule and
-- 10,000 failing certificates cost 10,000 numbers. The same state is written
-- to storage so `certmaint status` in another process sees it.
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local M = {}

function M:state_key(e) return keys.state(e.primary) end

--- A renewal job of e changed state to "waiting" (or "failed").
function M:save_state(e)
  local st = self.jobs:status("renew:" .. e.primary)
  if not st then return end
  if e.id then
    self.cache:set(e.id, { last_error = st.last_error or false, next_attempt = st.next_attempt or 0,
      attempts = st.attempts or 0 })
  end
  self.storage:store(self:state_key(e), core.json_encode {
    name = e.primary, state = st.state, attempts = st.attempts, last_error = st.last_error,
    next_attempt = st.next_attempt, first_attempt = st.first_attempt,
  })
  self.wake:notify_all() -- the renew ticker recomputes when to wake
end

function M:clear_state(e)
  if e.id then self.cache:set(e.id, { last_error = false, next_attempt = 0, attempts = 0 }) end
  self.storage:delete(self:state_key(e))
end

--- Retry states saved in storage, by primary name: one listing, one bulk read.
function M:load_states()
  local out = {}
  local listed = self.storage:list(keys.STATE_PREFIX, false)
  if not listed or #listed == 0 then return out end
  local by_key = {}
  for _, primary in ipairs(self.order) do by_key[self:state_key(self.entries[primary])] = primary end
  local wanted = {}
  for _, k in ipairs(listed) do if by_key[k] then wanted[#wanted + 1] = k end end
  local found = self.storage:load_many(wanted)
  for k, raw in pairs(found) do
    local st = core.json_decode(raw)
    if type(st) == "table" then out[by_key[k]] = st end
  end
  return out
end

--- Start-up: the back-off of renewals that were failing when the last
-- process stopped, from storage (save_state wrote it): each waits until its
-- saved next_attempt (the cache and the job queue both say so), its place in
-- the back-off kept, so a restart neither retries at once nor starts the
-- back-off over. Returns how many were restored.
function M:restore_states()
  local n = 0
  for primary, st in pairs(self:load_states()) do
    local e = self.entries[primary]
    if e and st.state == "waiting" and type(st.next_attempt) == "number" and st.next_attempt > core.now()
        and self.jobs:restore("renew:" .. primary, st) then
      n = n + 1
    end
  end
  if n > 0 then core.log("info", "backoff_restored", { renewals = n }) end
  return n
end

return M
