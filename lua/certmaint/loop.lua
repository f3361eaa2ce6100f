--- certmaint.loop — the Lua scheduler over the C event loop (the cqueues model).
--
-- C owns one event loop (timers, fds, signals, libcurl multi, children, the
-- in-loop HTTP server) and never calls Lua: `core.step(timeout)` runs one
-- iteration and returns the events that completed.  This module owns the
-- coroutines: each task is a coroutine that yields when it waits, and it is
-- resumed from the loop top when its event arrives — never inside libcurl.
--
--   local loop = require "certmaint.loop"
--   local t = loop.spawn(function()
--     local resp, err, code = loop.http { url = "http://127.0.0.1:8080/" }
--     loop.sleep(5)
--     local res = loop.exec({ "/bin/true" }, { timeout = 10 })
--     return resp and resp.status
--   end)
--   loop.run_until(function() return t.done end)
--   -- t.done, t.ok, t.results (table.pack'ed), t.error (with traceback)
--
-- Tasks
--   loop.spawn(fn, ...) / loop.spawn_named(name, fn, ...) -> task; it starts
--   at the next loop.step.  A task that raises never propagates: it is logged
--   (`task_failed`, with debug.traceback of the task's coroutine), counted in
--   loop.stats().failed, and its to-be-closed variables are closed.
--   loop.cancel(task) -> true if the task was alive: what it waits on is
--   cancelled (timer, transfer, child; a signal or condition wait dropped),
--   its coroutine is closed (pending __close handlers run, now, in the
--   caller), and task.done = true, task.ok = false, task.error = "cancelled".
--   false for a finished task; a task cannot cancel itself (raises).
--
-- Waiting (only inside a task; elsewhere they raise "loop.X must be called
-- from a loop task (loop.spawn)"; all work inside pcall, as Lua 5.4 yields
-- across pcall):
--   loop.sleep(seconds)           core.now() time: with a fake clock it wakes
--                                 once the clock is advanced past it
--   loop.http(req)                -> {status=, headers=, body=} | nil, err, code
--   loop.exec(argv, opts)         -> {status=, signal=, stdout=, stderr=,
--                                    stdout_truncated=, stderr_truncated=}
--                                    | nil, err, code [, partial result]
--   loop.wait_signal()            -> signal name ("TERM", ...)
--   loop.yield()                  let the other runnable tasks run first
--   loop.work(job, ...)           a blocking job (core.commit_job) on the C
--                                 loop's worker threads: job:submit(...),
--                                 then the task waits for its event while
--                                 the other tasks run, and returns
--                                 job:result().  Outside a task, or where the
--                                 task cannot wait (a decision hook), it runs
--                                 job:run(...) on this thread instead.  A job
--                                 that started is never stopped: cancelling
--                                 the task only stops the waiting.
--   c:wait([timeout])             on a condition c = loop.cond(): true when
--                                 notified, false once `timeout` seconds of
--                                 core.now() time passed (as loop.sleep)
-- req and opts are core.http_request / core.exec's.  Their `timeout` is also
-- enforced here, on real time, even if libcurl or the child would not honour
-- it: the transfer or child is cancelled and the call returns
-- nil, "timed out after Ns", "timeout".
--
-- Conditions and timers (from anywhere, inside a task or not)
--   loop.cond() -> c              c:notify() wakes the longest waiter,
--                                 c:notify_all() every waiter; both return how
--                                 many they woke.  c:waiters() -> count.  A
--                                 notify with no waiter is not remembered.
--   loop.at(time, fn) -> timer    fn(timer) is called (protected, at the loop
--                                 top, not in a task: it must not wait) once
--                                 core.now() >= time.  timer:cancel() -> true
--                                 if it was still pending; timer.pending.
--
-- Driving (never from inside a task):
--   loop.step(timeout)            one iteration: wait at most timeout seconds
--                                 (negative: until something happens; 0 when
--                                 a task is runnable), dispatch, resume
--   loop.run_until(pred, {timeout=}) steps until pred() is true -> true.
--                                 When no task is runnable it blocks in
--                                 core.step until the next timer, event or
--                                 signal (no periodic wake-up): pred is
--                                 re-checked only after a task ran or an event
--                                 arrived, so pred must depend only on what
--                                 tasks and events change — bound waits on
--                                 wall or monotonic time with opts.timeout
--                                 (real seconds) -> false, "timeout".  When
--                                 nothing at all can arrive (no task runnable,
--                                 no http/exec, no signal waiter or handler,
--                                 and no timer that can fire by itself: with a
--                                 fake clock only a test moves time) it
--                                 returns false, "stalled" instead of hanging
--                                 (with the real clock and an opts.timeout it
--                                 waits the timeout out first).
--   loop.run_until_idle({timeout=}) steps until no task is runnable and none
--                                 waits on http/exec/work; tasks sleeping on timers
--                                 not yet due (and condition waiters) count as
--                                 idle.  It never moves a fake clock.
--   loop.run() / loop.stop()      run_until stop() is called (or stalled)
--   loop.serve(opts, handler) -> id, port | nil, err, code: core.http_serve
--                                 in event mode (opts as core.http_serve's,
--                                 events implied): what its path table
--                                 (core.http_serve_set) cannot answer runs
--                                 handler(req) in a task of its own, req =
--                                 {method=, path=, query=, host=, headers=
--                                 (lower-case names), body=, server=}; it
--                                 returns {status=, body=, headers=} (or a
--                                 string: 200 text/plain; nil: 404) and may
--                                 wait (storage, http). A handler that raises
--                                 answers 500 (logged). loop.serve_close(id).
--   loop.on_signal(fn [, names])  fn(name) is called (protected) on each
--                                 signal event; names, if given, are passed to
--                                 core.signal_watch.  Returns a function that
--                                 removes fn.
--   loop.in_task(), loop.stats() -> {tasks=, running=, failed=, completed=,
--                                 cancelled=, sleeping=, waiting_io= (http, exec, work),
--                                 waiting_signal=, waiting_cond=, timers=}
--   loop.reset()                  drop every task (closing their coroutines)
--                                 and loop.at timer, cancel timers/transfers/
--                                 children/servers, forget signal handlers:
--                                 spec isolation.
local core = require "certmaint.core"

local M = {}

-- The deadline enforced here sits this far behind the C/libcurl timeout, so
-- the more precise inner error normally wins; both say "timeout".
local DEADLINE_SLACK = 0.5
local HTTP_TIMEOUT = 30           -- core.http_request's default
local EXEC_TIMEOUT, EXEC_GRACE = 120, 2 -- core.exec's defaults

local TOKEN = setmetatable({}, { __name = "certmaint.loop.wait" })

local Timer = {}                  -- loop.at timers
Timer.__index = Timer
Timer.__name = "certmaint.loop.timer"

local Cond = {}
Cond.__index = Cond
Cond.__name = "certmaint.loop.cond"

local tasks = {}                  -- task -> true, while alive
local ntasks = 0
local runq = {}                   -- { task = , args = packed } to resume, FIFO
local waiting = {}                -- event id -> task, or a Timer
local ntimers = 0                 -- pending loop.at timers
local signal_waiters = {}
local signal_handlers = {}
local serve_handlers = {}          -- server id -> handler (loop.serve)
local function new_nwait() return { sleep = 0, http = 0, exec = 0, signal = 0, cond = 0, work = 0 } end
local nwait = new_nwait()
local function new_counters() return { failed = 0, completed = 0, cancelled = 0 } end
local counters = new_counters()
local current = nil               -- the task being resumed
local in_step = false
local stop_requested = false
local seq = 0

local function enqueue(task, args)
  runq[#runq + 1] = { task = task, args = args }
end

local function error_text(err)
  if type(err) == "string" then return err end
  local mt = getmetatable(err)
  if mt and mt.__tostring then return tostring(err) end
  if type(err) == "table" and err.message then return tostring(err.message) end
  return "(error object is a " .. type(err) .. " value)"
end

local function forget(task)
  task.done = true
  tasks[task] = nil
  ntasks = ntasks - 1
end

local function finish(task, r)
  forget(task)
  if r[1] then
    task.ok = true
    task.results = table.pack(table.unpack(r, 2, r.n))
    counters.completed = counters.completed + 1
  else
    task.ok = false
    task.error_value = r[2]
    task.error = debug.traceback(task.co, error_text(r[2]))
    counters.failed = counters.failed + 1
    core.log("error", "task_failed", { task = task.name, error = task.error })
    coroutine.close(task.co) -- runs pending __close handlers
  end
end

local function resume(task, args)
  local prev = current
  current = task
  task.wait = nil
  local r = table.pack(coroutine.resume(task.co, table.unpack(args, 1, args.n)))
  current = prev
  if coroutine.status(task.co) == "dead" then
    finish(task, r)
  elseif r[2] ~= TOKEN then
    -- a bare coroutine.yield() inside a task: a cooperative yield
    task.wait = { kind = "yield" }
    enqueue(task, { n = 0 })
  end
end

local function wake(task, ...)
  local w = task.wait
  if w and nwait[w.kind] then nwait[w.kind] = nwait[w.kind] - 1 end
  task.wait = nil
  enqueue(task, table.pack(...))
end

local function check_context(what)
  local co, main = coroutine.running()
  if main or not current or current.co ~= co or current.done then
    error(("loop.%s must be called from a loop task (loop.spawn)"):format(what), 3)
  end
  return current
end

-- A watched policy call (certmaint.hooks) that waits here stops counting
-- until it runs again, and the tasks that run meanwhile are not charged to
-- it; a call that may not wait (a decision hook) gets an error, not a hang.
local function await(task, w)
  if not coroutine.isyieldable() then
    error("this call waits in the loop, and a decision hook (or a policy file being loaded) cannot wait", 3)
  end
  task.wait = w
  if nwait[w.kind] then nwait[w.kind] = nwait[w.kind] + 1 end
  local watch = core.watch_suspend()
  if not watch then return coroutine.yield(TOKEN) end
  local r = table.pack(coroutine.yield(TOKEN))
  core.watch_restore(watch)
  return table.unpack(r, 1, r.n)
end

-- A condition waiter leaves its condition's queue (notified, timed out or
-- cancelled); its timeout timer, if any, goes with it.
local function cond_unlink(w)
  local c = w.cond
  if c.q[w.slot] then
    c.q[w.slot] = nil
    c.n = c.n - 1
  end
  if w.id then
    core.timer_cancel(w.id)
    waiting[w.id] = nil
    w.id = nil
  end
end

-- Take a task out of whatever it waits on, cancelling the C side of it.
local function unwait(task)
  local w = task.wait
  if not w then return end
  task.wait = nil
  if nwait[w.kind] then nwait[w.kind] = nwait[w.kind] - 1 end
  if w.kind == "sleep" then
    core.timer_cancel(w.id)
    waiting[w.id] = nil
  elseif w.kind == "http" or w.kind == "exec" then
    w.cancel(w.id)
    waiting[w.id] = nil
    core.timer_cancel(w.deadline)
    waiting[w.deadline] = nil
  elseif w.kind == "work" then
    waiting[w.id] = nil -- the job runs on; its event finds no one
  elseif w.kind == "signal" then
    for i, t in ipairs(signal_waiters) do
      if t == task then table.remove(signal_waiters, i) break end
    end
  elseif w.kind == "cond" then
    cond_unlink(w)
  end -- "yield": M.cancel takes it out of the run queue
end

-- tasks ------------------------------------------------------------------------

function M.spawn_named(name, fn, ...)
  if type(fn) ~= "function" then error("loop.spawn: expected a function, got " .. type(fn), 2) end
  seq = seq + 1
  local task = { name = name and tostring(name) or ("task#" .. seq), done = false }
  task.co = coroutine.create(fn)
  tasks[task] = true
  ntasks = ntasks + 1
  enqueue(task, table.pack(...))
  return task
end

function M.spawn(fn, ...) return M.spawn_named(nil, fn, ...) end

function M.in_task()
  local co, main = coroutine.running()
  return not main and current ~= nil and current.co == co
end

--- Cancel a live task (see the header). Returns true if it was alive.
function M.cancel(task)
  if type(task) ~= "table" or type(task.co) ~= "thread" then
    error("loop.cancel: expected a task, got " .. type(task), 2)
  end
  if task.done then return false end
  if task == current then error("loop.cancel: a task cannot cancel itself", 2) end
  if task.wait == nil or task.wait.kind == "yield" then
    -- runnable (new, woken or yielding): out of the run queue
    for i = #runq, 1, -1 do
      if runq[i].task == task then table.remove(runq, i) end
    end
  end
  unwait(task)
  forget(task)
  task.ok, task.error = false, "cancelled"
  counters.cancelled = counters.cancelled + 1
  -- __close handlers run here; one that tries to wait gets the context error
  local ok, err = coroutine.close(task.co)
  if not ok then
    task.error_value = err
    core.log("error", "task_close_failed", { task = task.name, error = error_text(err) })
  end
  core.log("debug", "task_cancelled", { task = task.name })
  return true
end

-- waiting ------------------------------------------------------------------------

function M.sleep(seconds)
  local task = check_context("sleep")
  if type(seconds) ~= "number" or seconds ~= seconds then
    error("loop.sleep: seconds must be a number", 2)
  end
  local at = core.now() + math.max(seconds, 0)
  local id, err = core.timer(at)
  if not id then error("loop.sleep: " .. tostring(err), 2) end
  waiting[id] = task
  await(task, { kind = "sleep", id = id, wake_at = at })
end

function M.yield()
  local task = check_context("yield")
  enqueue(task, { n = 0 })
  await(task, { kind = "yield" })
end

function M.wait_signal()
  local task = check_context("wait_signal")
  signal_waiters[#signal_waiters + 1] = task
  return await(task, { kind = "signal" })
end

local function io_wait(task, kind, id, timeout, extra, cancel, what)
  local dl, err = core.deadline(timeout + extra + DEADLINE_SLACK)
  if not dl then
    cancel(id)
    return nil, err, "ENOMEM"
  end
  waiting[id] = task
  waiting[dl] = task
  return await(task, { kind = kind, id = id, deadline = dl, timeout = timeout, cancel = cancel, what = what })
end

function M.http(req)
  local task = check_context("http")
  if type(req) ~= "table" then error("loop.http: request must be a table", 2) end
  local id, err, code = core.http_request(req)
  if not id then return nil, err, code end
  return io_wait(task, "http", id, tonumber(req.timeout) or HTTP_TIMEOUT, 0, core.http_cancel,
    tostring(req.method or "GET") .. " " .. tostring(req.url))
end

function M.exec(argv, opts)
  local task = check_context("exec")
  if type(argv) ~= "table" then error("loop.exec: argv must be a table", 2) end
  opts = opts or {}
  local id, err, code = core.exec(argv, opts)
  if not id then return nil, err, code end
  local timeout = tonumber(opts.timeout) or EXEC_TIMEOUT
  -- the child gets SIGTERM at timeout and SIGKILL after the grace: wait for both
  return io_wait(task, "exec", id, timeout, tonumber(opts.kill_grace) or EXEC_GRACE, core.exec_cancel,
    tostring(argv[1]))
end

function M.work(job, ...)
  if not M.in_task() or not coroutine.isyieldable() then return job:run(...) end
  local task = check_context("work")
  local id, err, code = job:submit(...)
  if not id then return nil, err, code end
  waiting[id] = task
  await(task, { kind = "work", id = id })
  return job:result()
end

-- conditions ---------------------------------------------------------------------

--- A condition: tasks wait on it until another party notifies it.
function M.cond()
  -- q: slot -> waiting task, slots handed out in order (FIFO); a waiter
  -- that leaves early clears its slot and notify skips the hole
  return setmetatable({ q = {}, head = 1, tail = 0, n = 0 }, Cond)
end

function Cond:wait(timeout)
  local task = check_context("cond:wait")
  if getmetatable(self) ~= Cond then error("loop.cond:wait: expected a condition (use c:wait)", 2) end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout) then
    error("loop.cond:wait: timeout must be a number of seconds", 2)
  end
  local w = { kind = "cond", cond = self }
  if timeout and timeout < math.huge then
    local id, err = core.timer(core.now() + math.max(timeout, 0))
    if not id then error("loop.cond:wait: " .. tostring(err), 2) end
    w.id = id
    waiting[id] = task
  end
  self.tail = self.tail + 1
  w.slot = self.tail
  self.q[w.slot] = task
  self.n = self.n + 1
  return await(task, w)
end

local function notify(c, max)
  local woke = 0
  while woke < max and c.head <= c.tail do
    local task = c.q[c.head]
    c.head = c.head + 1
    if task then
      cond_unlink(task.wait)
      wake(task, true)
      woke = woke + 1
    end
  end
  if c.head > c.tail then c.head, c.tail = 1, 0 end
  return woke
end

function Cond:notify() return notify(self, 1) end
function Cond:notify_all() return notify(self, math.huge) end
function Cond:waiters() return self.n end

-- timers -------------------------------------------------------------------------

--- loop.at(time, fn) -> timer: fn(timer) at the loop top once core.now() >= time.
function M.at(time, fn)
  if type(time) ~= "number" or time ~= time then error("loop.at: time must be a number", 2) end
  if type(fn) ~= "function" then error("loop.at: expected a function, got " .. type(fn), 2) end
  local id, err = core.timer(time)
  if not id then error("loop.at: " .. tostring(err), 2) end
  local t = setmetatable({ at = time, fn = fn, id = id, pending = true }, Timer)
  waiting[id] = t
  ntimers = ntimers + 1
  return t
end

function Timer:cancel()
  if not self.pending then return false end
  self.pending = false
  ntimers = ntimers - 1
  waiting[self.id] = nil
  core.timer_cancel(self.id)
  return true
end

-- dispatching events --------------------------------------------------------------

local function http_result(ev)
  if ev.err then return nil, ev.err, ev.code end
  return { status = ev.status, headers = ev.headers, body = ev.body }
end

local function exec_result(ev)
  local res = { status = ev.status, signal = ev.signal, stdout = ev.stdout, stderr = ev.stderr,
    stdout_truncated = ev.stdout_truncated, stderr_truncated = ev.stderr_truncated }
  if ev.err then return nil, ev.err, ev.code, res end
  return res
end

local function on_signal_event(ev)
  for _, fn in ipairs({ table.unpack(signal_handlers) }) do
    local ok, err = pcall(fn, ev.name)
    if not ok then
      counters.failed = counters.failed + 1
      core.log("error", "signal_handler_failed", { signal = ev.name, error = error_text(err) })
    end
  end
  local waiters = signal_waiters
  signal_waiters = {}
  for _, task in ipairs(waiters) do
    if not task.done and task.wait and task.wait.kind == "signal" then wake(task, ev.name) end
  end
end

local function on_timer(t)
  t.pending = false
  ntimers = ntimers - 1
  local ok, err = pcall(t.fn, t)
  if not ok then
    counters.failed = counters.failed + 1
    core.log("error", "timer_failed", { error = debug.traceback(error_text(err)) })
  end
end

-- A request for a loop.serve handler: answered from a task of its own, so
-- the handler may wait (storage, http) while other requests are served.
local function respond(id, r)
  local called, ok, err, code = pcall(core.http_serve_respond, id, r)
  if not called then ok, err, code = nil, error_text(ok), "invalid" end
  if not ok and code ~= "ENOENT" then
    core.log("error", "serve_answer_refused", { error = err, code = code })
    core.http_serve_respond(id, { status = 500, body = "500 Internal Server Error\n" })
  end
end

local function on_http_request(ev)
  local handler = serve_handlers[ev.server]
  if not handler then
    return respond(ev.id, { status = 404, body = "404 Not Found\n" })
  end
  local req = { method = ev.method, path = ev.path, query = ev.query, headers = ev.headers,
    host = ev.headers.host, body = ev.body, server = ev.server }
  M.spawn_named("serve " .. ev.method .. " " .. ev.path, function()
    local ok, r = pcall(handler, req)
    if not ok then
      core.log("error", "serve_handler_failed", { method = req.method, path = req.path, error = error_text(r) })
      r = { status = 500, body = "500 Internal Server Error\n" }
    elseif r == nil then
      r = { status = 404, body = "404 Not Found\n" }
    elseif type(r) == "string" then
      r = { status = 200, body = r }
    elseif type(r) ~= "table" then
      core.log("error", "serve_handler_failed", { method = req.method, path = req.path,
        error = "the handler returned a " .. type(r) .. " (want a table, a string or nil)" })
      r = { status = 500, body = "500 Internal Server Error\n" }
    end
    respond(ev.id, r)
  end)
end

local function dispatch(ev)
  if ev.kind == "signal" then return on_signal_event(ev) end
  if ev.kind == "http_request" then return on_http_request(ev) end
  local task = waiting[ev.id]
  if not task then return end -- cancelled, or its task is gone
  waiting[ev.id] = nil
  if getmetatable(task) == Timer then return on_timer(task) end
  local w = task.wait
  if not w or task.done then return end
  if w.kind == "sleep" then
    if w.id == ev.id then wake(task) end
  elseif w.kind == "work" then
    if w.id == ev.id then wake(task) end
  elseif w.kind == "cond" then
    if w.id == ev.id then
      w.id = nil
      cond_unlink(w)
      wake(task, false)
    end
  elseif w.kind == "http" or w.kind == "exec" then
    if ev.id == w.id then
      core.timer_cancel(w.deadline)
      waiting[w.deadline] = nil
      if w.kind == "http" then wake(task, http_result(ev)) else wake(task, exec_result(ev)) end
    elseif ev.id == w.deadline then
      w.cancel(w.id)
      waiting[w.id] = nil
      wake(task, nil, ("%s timed out after %gs"):format(w.what, w.timeout), "timeout")
    end
  end
end

local function run_queue()
  local q = runq
  runq = {}
  for _, e in ipairs(q) do
    if not e.task.done then resume(e.task, e.args) end
  end
  return #q
end

local function check_driver(what)
  if M.in_task() then error(("loop.%s must not be called from a loop task"):format(what), 3) end
  if in_step then error(("loop.%s cannot be called while the loop is stepping"):format(what), 3) end
end

--- One iteration; returns how many events arrived and how many tasks ran.
function M.step(timeout)
  check_driver("step")
  in_step = true
  local ok, nev, nrun = pcall(function()
    local events = core.step(#runq > 0 and 0 or (timeout or 0))
    for _, ev in ipairs(events) do dispatch(ev) end
    return #events, run_queue()
  end)
  in_step = false
  if not ok then error(nev, 0) end
  return nev, nrun
end

-- Can anything arrive that a blocking core.step would return for?  I/O and
-- signals always can; timers only with the real clock (with a fake clock
-- their time comes only when a test moves it, which no blocked step sees).
local function can_wake()
  if nwait.http + nwait.exec + nwait.signal + nwait.work > 0 or #signal_handlers > 0 then return true end
  local p = core.loop_pending()
  if p.http > 0 or p.exec > 0 or core.work_pending() > 0 then return true end
  return p.timers > 0 and not core.clock_is_fake()
end

function M.run_until(pred, opts)
  check_driver("run_until")
  local deadline = opts and opts.timeout and (core.monotonic() + opts.timeout)
  local t = core.now()
  while not pred() do
    local wait = -1
    if #runq > 0 then
      wait = 0
    elseif deadline then
      wait = deadline - core.monotonic()
      if wait <= 0 then return false, "timeout" end
    end
    if wait ~= 0 and not can_wake() and (not deadline or core.clock_is_fake()) then
      -- nothing can arrive: fire what is already due; if nothing was, and
      -- pred did not move the fake clock itself, nothing ever will
      local nev, nrun = M.step(0)
      if nev == 0 and nrun == 0 and #runq == 0 and (core.now() == t or not core.clock_is_fake()) then
        return false, "stalled"
      end
    else
      M.step(wait)
    end
    t = core.now()
  end
  return true
end

local function busy() return #runq > 0 or nwait.http > 0 or nwait.exec > 0 or nwait.work > 0 end

function M.run_until_idle(opts)
  check_driver("run_until_idle")
  local deadline = opts and opts.timeout and (core.monotonic() + opts.timeout)
  while true do
    if not busy() then
      -- one poll fires every timer already due; nothing arriving means idle
      local nev, nrun = M.step(0)
      if nev == 0 and nrun == 0 and not busy() then return true end
    else
      -- I/O is pending: block until it (or its deadline) reports
      local wait = #runq > 0 and 0 or -1
      if deadline then
        local left = deadline - core.monotonic()
        if left <= 0 then return false end
        if wait < 0 then wait = left end
      end
      M.step(wait)
    end
    if deadline and core.monotonic() >= deadline and busy() then return false end
  end
end

function M.stop() stop_requested = true end

function M.run()
  stop_requested = false
  M.run_until(function() return stop_requested end)
  stop_requested = false
end

function M.on_signal(fn, names)
  if type(fn) ~= "function" then error("loop.on_signal: expected a function", 2) end
  if names ~= nil then core.signal_watch(names) end
  signal_handlers[#signal_handlers + 1] = fn
  return function()
    for i, f in ipairs(signal_handlers) do
      if f == fn then table.remove(signal_handlers, i) return end
    end
  end
end

function M.serve(opts, handler)
  if type(opts) ~= "table" then error("loop.serve: opts must be a table", 2) end
  if type(handler) ~= "function" then error("loop.serve: handler must be a function", 2) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.events = true
  local id, port_or_err, code = core.http_serve(o)
  if not id then return nil, port_or_err, code end
  serve_handlers[id] = handler
  return id, port_or_err
end

function M.serve_close(id)
  serve_handlers[id] = nil
  return core.http_serve_close(id)
end

function M.stats()
  return {
    tasks = ntasks,
    running = #runq,
    failed = counters.failed,
    completed = counters.completed,
    cancelled = counters.cancelled,
    sleeping = nwait.sleep,
    waiting_io = nwait.http + nwait.exec + nwait.work, -- work: a worker-pool job
    waiting_signal = nwait.signal,
    waiting_cond = nwait.cond,
    timers = ntimers,
  }
end

function M.reset()
  if M.in_task() then error("loop.reset must not be called from a loop task", 2) end
  local live = {}
  for task in pairs(tasks) do live[#live + 1] = task end
  for _, w in pairs(waiting) do
    if getmetatable(w) == Timer then w.pending = false end
  end
  tasks, ntasks, runq, waiting, signal_waiters, signal_handlers = {}, 0, {}, {}, {}, {}
  serve_handlers = {}
  ntimers = 0
  for _, task in ipairs(live) do
    -- a condition it waited on forgets it (the condition may outlive the reset)
    local w = task.wait
    if w and w.kind == "cond" and w.cond.q[w.slot] then
      w.cond.q[w.slot] = nil
      w.cond.n = w.cond.n - 1
    end
    task.done, task.ok, task.error, task.wait = true, false, "cancelled by loop.reset", nil
    pcall(coroutine.close, task.co)
  end
  nwait = new_nwait()
  counters = new_counters()
  stop_requested = false
  core.loop_reset()
end

return M
