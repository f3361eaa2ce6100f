--- Is another instance's lock stale? A judgement that tolerates clock skew.
--
-- A lock record's `updated` is the holder's wall clock; certmagic calls the
-- lock stale when our wall clock is more than stale_after (10 s) past it. Two
-- machines whose clocks differ by more than that break the rule: the one
-- ahead takes every live lock of the one behind (a second order at the CA
-- for the same name), and a wall-clock step forward on one instance does the
-- same. So a lock is stale here when
--   - we have seen its record unchanged (the same bytes) for more than
--     stale_after on our own elapsed clock (core.elapsed: no skew, no steps):
--     its holder's heartbeat, which rewrites it every stale_after / 2, has
--     stopped, whatever either clock says; or
--   - by its own record it is older than stale_after + max_skew: long dead
--     when we first look at it (a restart after a crash does not wait), with
--     max_skew (the backend's option, default MAX_SKEW) the clock difference
--     between instances this tolerates.
-- A lock whose `updated` lies in our future is judged by the first rule only.
local core = require "certmaint.core"

local M = {}

M.MAX_SKEW = 300 -- seconds of clock difference between instances tolerated by default

--- A tracker for one backend: what it saw of each lock, and when.
function M.new(max_skew) return { seen = {}, max_skew = max_skew or M.MAX_SKEW } end

--- Judge the lock at key lk whose file holds `text` (record rec, with
-- rec.updated in Unix seconds) at wall time `now` -> stale (bool), why.
function M.judge(tracker, lk, text, rec, now, stale_after)
  local el = core.elapsed()
  local s = tracker.seen[lk]
  if not s or s.text ~= text then
    s = { text = text, since = el }
    tracker.seen[lk] = s
  end
  if el - s.since > stale_after then return true, "stale" end
  if now - rec.updated > stale_after + tracker.max_skew then return true, "stale" end
  return false
end

--- Forget lock lk (taken, released, gone).
function M.forget(tracker, lk) tracker.seen[lk] = nil end

return M
