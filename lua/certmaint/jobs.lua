--- certmaint.jobs: named jobs with de-duplication, a concurrency bound and
-- certmagic's retry back-off, on top of the Lua scheduler (certmaint.loop).
--
--   local q = jobs.new { concurrency = 8 }
--   q:submit("renew:example.com", function(attempt)
--     ...                       -- runs in a loop task: may yield (HTTP, sleep)
--     return true               -- done
--     -- or: return nil, "message" | { message=, final=true, retry_after= }, code
--   end)
--
-- The model is certmagic's jobManager and doWithRetry (async.go):
-- - Submit of a name that is already queued, running or waiting to retry is a
--   no-op (certmagic: "prevent duplicate jobs"); it returns false — except
--   for a waiting job whose retry time has come: that submit is its retry.
-- - At most `concurrency` jobs run at once; the rest wait in FIFO order.
--   certmagic bounds its workers the same way (maxConcurrentJobs).
-- - A failure (returning nil/false, or raising) is retried after the next
--   interval of retryIntervals: 1m, 2m, 2m, 5m, 10m, 20m, 20m, 30m, 30m, 1h,
--   3h, 6h, then the last (6h) again and again, counted from the end of the
--   failed attempt, for as long as less than maxRetryDuration (30 days) has
--   passed since the first attempt began; a failure after that gives up
--   (certmagic: "final attempt ... giving up"). An error marked final
--   ({ final = true }, certmagic's ErrNoRetry) is never retried. An error's
--   `retry_after` (absolute Unix time: a CA's Retry-After, as the ACME client
--   reports it; `retry_at` is the older spelling, also read) defers the retry
--   to then if that is later than the schedule says; it never makes a retry
--   come sooner.
-- - An error's `retry_by` (absolute Unix time) is the latest the next attempt
--   may come by the schedule: the engine sets it from the remaining lifetime
--   of the certificate being renewed, so certmagic's minutes-long back-off
--   never outlasts a short-lived certificate (60 s ones: a first retry 1 min
--   later came after their notAfter). Never sooner than MIN_RETRY seconds;
--   a later retry_after still wins (the CA said when).
-- - Unlike certmagic, a job waiting between attempts gives up its concurrency
--   slot (certmagic's worker sleeps inside doWithRetry, keeping it), so one
--   failing CA does not stall every other renewal for hours.
-- - A job waiting to retry is data, not a sleeping coroutine: its attempt's
--   task ends, and it waits as a next_attempt time in the queue's heap (no
--   coroutine, no timer of its own).  With retry = "auto" (the default) one
--   loop.at timer per queue, armed at the earliest next_attempt, re-queues
--   the jobs that are due.  With retry = "manual" nothing is scheduled: the
--   owner keeps the schedule (the engine: the cache's next_attempt, honoured
--   by the renew scan) and re-submits; a submit of a waiting job that is due
--   is its next attempt.  q:next_wakeup() is the earliest next_attempt.
--
-- Every state change is logged with core.log: job_queued, job_started
-- (debug), job_done, job_failed (attempt, retry_in, error), job_retry,
-- job_gave_up (error level), job_cancelled; and reported to opts.on_state.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local duration = require "certmaint.duration"

local M = {}

--- certmagic's retryIntervals (async.go), in seconds.
M.CERTMAGIC_RETRY_INTERVALS = {
  60, 120, 120, 300,          -- elapsed: 10 min
  600, 1200, 1200,            -- elapsed: 1 h
  1800, 1800,                 -- elapsed: 2 h
  3600, 10800,                -- elapsed: 6 h
  21600,                      -- then every 6 h up to max_retry_duration
}
--- The shortest wait a retry_by can bring a retry down to, in seconds.
M.MIN_RETRY = 1
--- certmagic's maxRetryDuration: 30 days.
M.MAX_RETRY_DURATION = 30 * 86400

M.STATES = { queued = true, running = true, waiting = true, done = true, failed = true }

local ACTIVE = { queued = true, running = true, waiting = true }

local Queue = {}
Queue.__index = Queue
Queue.__name = "certmaint.jobs"

----------------------------------------------------------------------------
-- helpers

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

local function log(level, event, fields)
  core.log(level, event, fields)
end

-- A usable absolute time, or nil (NaN, a string, ...).
local function time_or_nil(t)
  if type(t) ~= "number" or t ~= t then return nil end
  return t
end

-- The message, final flag and retry time (retry_after, or the older
-- retry_at: the later of the two) of whatever a job failed with.
local function error_parts(err)
  if type(err) == "table" then
    local msg = err.message
    if msg == nil then msg = err.msg or err.error end
    local retry_at = time_or_nil(err.retry_after)
    local older = time_or_nil(err.retry_at)
    if older and (not retry_at or older > retry_at) then retry_at = older end
    return tostring(msg == nil and "unknown error" or msg), err.final and true or false, retry_at,
      err.traceback, time_or_nil(err.retry_by)
  end
  if err == nil then return "unknown error", false, nil end
  return tostring(err), false, nil
end

-- xpcall handler: keep table errors (they may carry final/retry_at), add a
-- traceback to everything else.
local function on_raise(e)
  if type(e) == "table" then
    if e.traceback == nil then
      local ok = pcall(function() e.traceback = debug.traceback("raised", 2) end)
      if not ok then return { message = tostring(e), traceback = debug.traceback("raised", 2) } end
    end
    return e
  end
  local msg = tostring(e)
  return { message = msg, traceback = debug.traceback(msg, 2) }
end

----------------------------------------------------------------------------
-- the waiting heap: a binary min-heap of jobs on (next_attempt, wseq), each
-- job knowing its index (job.hidx) so cancel and re-submit remove it in
-- O(log n); wseq keeps jobs due at the same time in the order they failed

local function before(a, b)
  if a.next_attempt ~= b.next_attempt then return a.next_attempt < b.next_attempt end
  return a.wseq < b.wseq
end

local function heap_place(h, i, job)
  h[i] = job
  job.hidx = i
end

local function heap_up(h, i)
  local job = h[i]
  while i > 1 do
    local p = i // 2
    if not before(job, h[p]) then break end
    heap_place(h, i, h[p])
    i = p
  end
  heap_place(h, i, job)
end

local function heap_down(h, i)
  local n, job = #h, h[i]
  while true do
    local c = 2 * i
    if c > n then break end
    if c < n and before(h[c + 1], h[c]) then c = c + 1 end
    if not before(h[c], job) then break end
    heap_place(h, i, h[c])
    i = c
  end
  heap_place(h, i, job)
end

local function heap_push(q, job)
  q.wseq = q.wseq + 1
  job.wseq = q.wseq
  local h = q.heap
  h[#h + 1] = job
  job.hidx = #h
  heap_up(h, #h)
end

local function heap_remove(q, job)
  local h, i = q.heap, job.hidx
  if not i then return end
  job.hidx, job.wseq = nil, nil
  local last = h[#h]
  h[#h] = nil
  if last ~= job then
    heap_place(h, i, last)
    heap_up(h, i)
    heap_down(h, last.hidx)
  end
end

----------------------------------------------------------------------------
-- construction

local OPTS = { concurrency = true, retry_intervals = true, max_retry_duration = true, on_state = true,
  retry = true }
local RETRY = { auto = true, manual = true }

--- jobs.new{ concurrency = 8, retry_intervals = jobs.CERTMAGIC_RETRY_INTERVALS,
-- max_retry_duration = 30 * 86400, retry = "auto" | "manual",
-- on_state = function(name, state) end }
-- Intervals and the maximum may be numbers of seconds or duration strings.
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("jobs.new: options must be a table", 2) end
  for k in pairs(opts) do
    if not OPTS[k] then error("jobs.new: unknown option " .. tostring(k), 2) end
  end
  local conc = opts.concurrency == nil and 8 or opts.concurrency
  conc = type(conc) == "number" and math.tointeger(conc)
  if not conc or conc < 1 then
    error("jobs.new: concurrency must be a positive integer", 2)
  end
  local intervals = {}
  for i, v in ipairs(opts.retry_intervals or M.CERTMAGIC_RETRY_INTERVALS) do
    local secs, err = duration.parse(v, "retry_intervals[" .. i .. "]")
    if not secs then error("jobs.new: " .. err, 2) end
    intervals[i] = secs
  end
  if #intervals == 0 then error("jobs.new: retry_intervals must not be empty", 2) end
  local max = opts.max_retry_duration == nil and M.MAX_RETRY_DURATION or opts.max_retry_duration
  local max_secs, merr = duration.parse(max, "max_retry_duration")
  if not max_secs then error("jobs.new: " .. merr, 2) end
  if opts.on_state ~= nil and not callable(opts.on_state) then
    error("jobs.new: on_state must be a function", 2)
  end
  local retry = opts.retry == nil and "auto" or opts.retry
  if not RETRY[retry] then error('jobs.new: retry must be "auto" or "manual"', 2) end
  return setmetatable({
    retry = retry,
    heap = {}, wseq = 0,  -- waiting jobs by next_attempt
    timer = nil,          -- "auto": the one loop.at timer, at the heap's top
    concurrency = conc,
    intervals = intervals,
    max_retry_duration = max_secs,
    on_state = opts.on_state,
    jobs = {},            -- name -> job (active, done or failed)
    fifo = {}, head = 1, tail = 0, -- queued jobs; cancelled ones are skipped
    count = { queued = 0, running = 0, waiting = 0 },
  }, Queue)
end

----------------------------------------------------------------------------
-- state machine

local function set_state(q, job, state)
  local old = job.state
  if old == state then return end
  if q.count[old] then q.count[old] = q.count[old] - 1 end
  if q.count[state] then q.count[state] = q.count[state] + 1 end
  job.state = state
  if q.on_state then
    local ok, err = pcall(q.on_state, job.name, state)
    if not ok then
      log("error", "job_on_state_failed", { name = job.name, state = state, error = tostring(err) })
    end
  end
end

-- Forget a job that left the active states (cancel).
local function drop(q, job)
  if q.count[job.state] then q.count[job.state] = q.count[job.state] - 1 end
  job.state = "cancelled"
  if q.jobs[job.name] == job then q.jobs[job.name] = nil end
end

local function enqueue(q, job)
  q.tail = q.tail + 1
  q.fifo[q.tail] = job
  job.next_attempt = nil
  set_state(q, job, "queued")
end

local function dequeue(q)
  while q.head <= q.tail do
    local job = q.fifo[q.head]
    q.fifo[q.head] = nil
    q.head = q.head + 1
    if job.state == "queued" and not job.cancelled then return job end
  end
  q.head, q.tail = 1, 0
  return nil
end

local run_attempt, dispatch

-- The next attempt of a waiting job: back in the FIFO.
local function requeue(q, job, fn)
  heap_remove(q, job)
  if fn then job.fn = fn end
  log("info", "job_retry", { name = job.name, attempt = job.attempts + 1 })
  enqueue(q, job)
end

local retry_due

-- "auto": keep the queue's one timer at the earliest next_attempt (none
-- when nothing waits).
local function arm(q)
  if q.retry ~= "auto" then return end
  local top = q.heap[1]
  local t = q.timer
  if t and t.pending then
    if top and t.at == top.next_attempt then return end
    t:cancel()
  end
  q.timer = nil
  if top then
    q.timer = loop.at(top.next_attempt, function() retry_due(q) end)
  end
end

-- "auto", the timer: re-queue every waiting job that is due, oldest first.
function retry_due(q)
  local now, h = core.now(), q.heap
  while h[1] and h[1].next_attempt <= now do requeue(q, h[1]) end
  arm(q)
  dispatch(q)
end

function dispatch(q)
  while q.count.running < q.concurrency do
    local job = dequeue(q)
    if not job then return end
    set_state(q, job, "running")
    log("debug", "job_started", { name = job.name, attempt = job.attempts + 1 })
    job.task = loop.spawn(run_attempt, q, job)
  end
end

-- One attempt, inside its own loop task; the task ends with the attempt.
function run_attempt(q, job)
  if job.cancelled then -- cancelled between dispatch and the task's start
    drop(q, job)
    log("info", "job_cancelled", { name = job.name, attempt = job.attempts })
    return dispatch(q)
  end
  job.attempts = job.attempts + 1
  local started = core.now()
  job.first_attempt = job.first_attempt or started
  local ok, r1, r2, r3 = xpcall(job.fn, on_raise, job.attempts)
  local now = core.now()
  if job.cancelled then
    drop(q, job)
    log("info", "job_cancelled", { name = job.name, attempt = job.attempts })
    return dispatch(q)
  end
  if ok and r1 then
    job.last_error, job.last_code, job.next_attempt, job.task = nil, nil, nil, nil
    set_state(q, job, "done")
    log("info", "job_done", { name = job.name, attempt = job.attempts })
    return dispatch(q)
  end
  local err, code
  if ok then
    err, code = r2, r3
    if err == nil then err = "job returned " .. tostring(r1) .. " without an error" end
  else
    err, code = r1, "error"
  end
  local msg, final, retry_at, traceback, retry_by = error_parts(err)
  job.last_error, job.last_code = msg, code
  local elapsed = now - job.first_attempt
  if final or elapsed >= q.max_retry_duration then
    job.next_attempt, job.task = nil, nil
    set_state(q, job, "failed")
    log("error", "job_gave_up", {
      name = job.name, attempt = job.attempts, error = msg, code = code, traceback = traceback,
      reason = final and "final error" or "retried for " .. duration.format(elapsed),
    })
    return dispatch(q)
  end
  job.retry_index = math.min(job.retry_index + 1, #q.intervals)
  local at = now + q.intervals[job.retry_index]
  if retry_by and retry_by < at then at = math.max(retry_by, now + M.MIN_RETRY) end
  if retry_at and retry_at > at then at = retry_at end
  job.next_attempt, job.task = at, nil
  -- manual: the re-submit brings the function; do not keep what it captured
  if q.retry == "manual" then job.fn = nil end
  heap_push(q, job)
  set_state(q, job, "waiting")
  log("warn", "job_failed", {
    name = job.name, attempt = job.attempts, error = msg, code = code, traceback = traceback,
    retry_in = duration.format(at - now),
  })
  arm(q)
  return dispatch(q) -- the slot is free while it waits
end

----------------------------------------------------------------------------
-- API

--- Queue fn under name. Returns true if queued, false if a job of that name
-- is already queued or running, or waiting to retry and not yet due. A job
-- waiting whose next_attempt has come (core.now() >= next_attempt) is
-- re-queued as its next attempt, with fn: attempts, first_attempt and its
-- place in the back-off are kept (the way "manual" queues retry).
function Queue:submit(name, fn)
  if type(name) ~= "string" or name == "" then error("jobs:submit: name must be a non-empty string", 2) end
  if not callable(fn) then error("jobs:submit: fn must be a function", 2) end
  local old = self.jobs[name]
  if old and old.state == "waiting" and old.next_attempt <= core.now() then
    requeue(self, old, fn)
    arm(self)
    dispatch(self)
    return true
  end
  if old and ACTIVE[old.state] then return false end
  local job = {
    name = name, fn = fn, state = "new", attempts = 0, retry_index = 0,
  }
  self.jobs[name] = job
  enqueue(self, job)
  log("info", "job_queued", { name = name })
  dispatch(self)
  return true
end

--- Restore a job that was waiting to retry when the process stopped (its
-- state as saved from q:status): it waits again until next_attempt, with
-- its attempts, first_attempt and place in the back-off kept, so a restart
-- neither retries at once nor starts the back-off over. Nothing happens for
-- a name already known here. Returns true if restored.
function Queue:restore(name, st)
  if type(name) ~= "string" or name == "" then error("jobs:restore: name must be a non-empty string", 2) end
  if type(st) ~= "table" then error("jobs:restore: state must be a table", 2) end
  if self.jobs[name] then return false end
  local attempts = math.tointeger(st.attempts)
  local next_attempt = time_or_nil(st.next_attempt)
  if not attempts or attempts < 1 or not next_attempt then return false end
  local job = {
    name = name, state = "new", attempts = attempts, retry_index = math.min(attempts, #self.intervals),
    first_attempt = time_or_nil(st.first_attempt) or next_attempt, next_attempt = next_attempt,
    last_error = type(st.last_error) == "string" and st.last_error or nil,
  }
  self.jobs[name] = job
  heap_push(self, job)
  set_state(self, job, "waiting")
  arm(self)
  return true
end

local function snapshot(job)
  return {
    name = job.name,
    state = job.state,
    attempts = job.attempts,
    first_attempt = job.first_attempt,
    next_attempt = job.next_attempt,
    last_error = job.last_error,
    last_code = job.last_code,
    cancelled = job.cancelled or nil,
  }
end

--- nil, or { name, state = "queued"|"running"|"waiting"|"done"|"failed",
-- attempts, first_attempt, next_attempt, last_error, last_code, cancelled }.
function Queue:status(name)
  local job = self.jobs[name]
  return job and snapshot(job) or nil
end

--- Every job's status, sorted by name.
function Queue:list()
  local out = {}
  for _, job in pairs(self.jobs) do out[#out + 1] = snapshot(job) end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

--- Jobs queued or running (not those waiting to retry).
function Queue:pending()
  return self.count.queued + self.count.running
end

--- Jobs waiting to retry.
function Queue:waiting()
  return self.count.waiting
end

--- The earliest next_attempt among jobs waiting to retry, or nil.
function Queue:next_wakeup()
  local top = self.heap[1]
  return top and top.next_attempt
end

--- Move every waiting job's next_attempt by delta seconds (the wall clock
-- stepped by delta: a back-off is real time, engine/timewatch.lua). The heap's
-- order does not change.
function Queue:shift_waiting(delta)
  for _, job in ipairs(self.heap) do job.next_attempt = job.next_attempt + delta end
  if self.timer and self.timer.pending then
    self.timer:cancel()
    self.timer = nil
  end
  arm(self)
end

--- Cancel a job: a queued or waiting one is forgotten at once; a running one
-- finishes its attempt (it cannot be interrupted safely), is not retried and
-- keeps its name reserved until then. Done/failed records are forgotten.
-- Returns true if there was a job of that name.
function Queue:cancel(name)
  local job = self.jobs[name]
  if not job then return false end
  if job.state == "running" then
    job.cancelled = true
    return true
  end
  local was = job.state
  job.cancelled = true
  job.task = nil
  if was == "waiting" then
    heap_remove(self, job)
    arm(self)
  end
  drop(self, job)
  if ACTIVE[was] then log("info", "job_cancelled", { name = name, state = was }) end
  return true
end

--- Cancel every job and forget every record (running attempts finish, unretried).
function Queue:clear()
  local names = {}
  for name in pairs(self.jobs) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do self:cancel(name) end
end

return M
