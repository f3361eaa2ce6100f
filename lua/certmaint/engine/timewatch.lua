--- Time: which clock decides what, and what a step of the wall clock does.
--
-- Two clocks (core/clock.h):
--   core.now()      wall time. Certificate validity is wall time, so every
--                   renewal decision (window, expiry, ARI, staple freshness)
--                   is taken on it, and retry times are kept in it (they are
--                   stored, and read by `status` in another process).
--   core.elapsed()  time that never steps and counts a suspend
--                   (CLOCK_BOOTTIME; fake with the testing clock). The pass
--                   intervals are measured on it, and the loop's timers fire
--                   on it, so a wall-clock step neither stretches nor shrinks
--                   a sleep, and after a resume what is due runs at once.
--
-- The difference now() - elapsed() is constant unless the wall clock steps
-- (NTP slews by at most 0.5 ms/s). Each ticker wake-up compares it with the
-- last one; a change beyond JUMP_TOLERANCE is a step (event clock_jump, warn):
-- the back-off of failing renewals is real time, so every waiting retry moves
-- by the step, a step back does not stretch a back-off by a day and a step
-- forward does not make every back-off due at once. Renewals the step made
-- due go through the renew pass and the job queue's concurrency as any others.
-- A suspend moves both clocks alike: no step, and the passes that fell due
-- while suspended run once on resume (not once per missed interval).
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

M.JUMP_TOLERANCE = 5 -- seconds the wall clock may drift from elapsed time between wake-ups

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- Notice a step of the wall clock since the last call -> the step in
-- seconds (0 when none). The first call only takes the reference.
function M:clock_watch()
  local offset = core.now() - core.elapsed()
  local last = self.clock_offset
  self.clock_offset = offset
  if not last then return 0 end
  local delta = offset - last
  if math.abs(delta) <= M.JUMP_TOLERANCE then return 0 end
  local shifted = self:shift_retries(delta)
  log("warn", "clock_jump", { delta = math.floor(delta + 0.5), now = rfc3339.iso(core.now()),
    retries_shifted = shifted })
  return delta
end

--- Move every waiting retry by delta seconds: the job queue's heap and the
-- cache's next_attempt (the C due-scan's copy). -> how many entries moved.
function M:shift_retries(delta)
  self.jobs:shift_waiting(delta)
  local n = 0
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local id = e and e.id
    if id then
      local c = self.cache:get(id, { pem = false })
      if c and c.next_attempt and c.next_attempt > 0 then
        self.cache:set(id, { next_attempt = c.next_attempt + delta })
        n = n + 1
      end
    end
  end
  for id, at in pairs(self.ari_retry) do self.ari_retry[id] = at + delta end
  return n
end

--- The renew ticker's wait: until its interval has passed on the elapsed
-- clock or the earliest retry of a failing renewal is due on the wall clock,
-- whichever comes first.
function M:next_tick_wait(interval, last_elapsed, with_retries)
  local wait = last_elapsed + interval - core.elapsed()
  if with_retries then
    -- a retry already due that retry_due did not take (wall time says the
    -- certificate is not due after all: the clock stepped back) waits for
    -- the next pass; counting it would wake the ticker again at once, forever
    local retry, now = self.jobs:next_wakeup(), core.now()
    if retry and retry > now and retry - now < wait then wait = retry - now end
    -- renewals waiting for the order budget: when it frees (engine/order_budget.lua)
    local budget = self:budget_wakeup()
    if budget and budget > now and budget - now < wait then wait = budget - now end
  end
  return math.max(wait, 0)
end

--- One ticker task: a pass of `kind` every policy[interval_field] seconds of
-- elapsed time, first one interval after start. A pass that raises is logged
-- (pass_failed) and the ticker goes on; each finished pass is reported to the
-- watchdog (engine/watchdog.lua).
function M:start_ticker(kind, interval_field)
  return loop.spawn_named("ticker:" .. kind, function()
    local last = core.elapsed()
    self:clock_watch()
    while not self.stopping do
      local interval = self.policy[interval_field]
      local wait = self:next_tick_wait(interval, last, kind == "renew")
      -- still loading at start-up: look again in a second (no spinning)
      if not self.started then wait = math.min(math.max(wait, 1), interval) end
      if kind == "renew" then self.wake:wait(wait) else loop.sleep(wait) end
      if self.stopping then break end
      self:clock_watch()
      if self.started and core.elapsed() >= last + interval then
        last = core.elapsed()
        self:pass_started(kind)
        -- scheduled: the clean pass leaves the interval to whichever instance cleaned last
        local ok, err = pcall(self.tick, self, kind, { scheduled = true })
        if not ok then log("error", "pass_failed", { kind = kind, error = err }) end
        self:pass_completed(kind, ok)
      elseif self.started and kind == "renew" then
        local ok, err = pcall(self.retry_due, self)
        if not ok then log("error", "pass_failed", { kind = "retry", error = err }) end
      end
    end
  end)
end

return M
