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
-- req and opts are core.http_request / core.exec's.  Their `timeout` is also
-- enforced here, on real time, even if libcurl or the child would not honour
-- it: the transfer or child is cancelled and the call returns
-- nil, "timed out after Ns", "timeout".
--
-- Driving (never from inside a task):
--   loop.step(timeout)            one iteration: wait at most timeout seconds
--                                 (0 when a task is runnable), dispatch, resume
--   loop.run_until(pred, {timeout=}) steps until pred() is true; with
--                                 opts.timeout (real seconds) returns false
--                                 when it passes
--   loop.run_until_idle({timeout=}) steps until no task is runnable and none
--                                 waits on http/exec; tasks sleeping on timers
--                                 not yet due count as idle.  It never moves a
--                                 fake clock.
--   loop.run() / loop.stop()      step until stop() is called
--   loop.on_signal(fn [, names])  fn(name) is called (protected) on each
--                                 signal event; names, if given, are passed to
--                                 core.signal_watch.  Returns a function that
--                                 removes fn.
--   loop.in_task(), loop.stats() -> {tasks=, running=, failed=, sleeping=,
--                                 waiting_io=, waiting_signal=, completed=}
--   loop.reset()                  drop every task (closing their coroutines),
--                                 cancel timers/transfers/children/servers,
--                                 forget signal handlers: spec isolation.
local core = require "certmaint.core"

local M = {}

-- The deadline enforced here sits this far behind the C/libcurl timeout, so
-- the more precise inner error normally wins; both say "timeout".
local DEADLINE_SLACK = 0.5
local MAX_BLOCK = 0.25            -- run_until re-checks pred at least this often
local HTTP_TIMEOUT = 30           -- core.http_request's default
local EXEC_TIMEOUT, EXEC_GRACE = 120, 2 -- core.exec's defaults

local TOKEN = setmetatable({}, { __name = "certmaint.loop.wait" })

local tasks = {}                  -- task -> true, while alive
local ntasks = 0
local runq = {}                   -- { task = , args = packed } to resume, FIFO
local waiting = {}                -- event id -> task
local signal_waiters = {}
local signal_handlers = {}
local nwait = { sleep = 0, http = 0, exec = 0, signal = 0 }
local counters = { failed = 0, completed = 0 }
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

local function finish(task, r)
  task.done = true
  tasks[task] = nil
  ntasks = ntasks - 1
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

local function await(task, w)
  task.wait = w
  if nwait[w.kind] then nwait[w.kind] = nwait[w.kind] + 1 end
  return coroutine.yield(TOKEN)
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

local function dispatch(ev)
  if ev.kind == "signal" then return on_signal_event(ev) end
  local task = waiting[ev.id]
  if not task then return end -- cancelled, or its task is gone
  waiting[ev.id] = nil
  local w = task.wait
  if not w or task.done then return end
  if w.kind == "sleep" then
    if w.id == ev.id then wake(task) end
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

function M.run_until(pred, opts)
  check_driver("run_until")
  local deadline = opts and opts.timeout and (core.monotonic() + opts.timeout)
  while not pred() do
    local wait = MAX_BLOCK
    if deadline then
      local left = deadline - core.monotonic()
      if left <= 0 then return false end
      wait = math.min(wait, left)
    end
    M.step(wait)
  end
  return true
end

local function busy() return #runq > 0 or nwait.http > 0 or nwait.exec > 0 end

function M.run_until_idle(opts)
  check_driver("run_until_idle")
  local deadline = opts and opts.timeout and (core.monotonic() + opts.timeout)
  while true do
    if not busy() then
      -- one poll fires every timer already due; nothing arriving means idle
      local nev, nrun = M.step(0)
      if nev == 0 and nrun == 0 and not busy() then return true end
    else
      local wait = #runq > 0 and 0 or MAX_BLOCK
      if deadline then
        local left = deadline - core.monotonic()
        if left <= 0 then return false end
        wait = math.min(wait, left)
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

function M.stats()
  return {
    tasks = ntasks,
    running = #runq,
    failed = counters.failed,
    completed = counters.completed,
    sleeping = nwait.sleep,
    waiting_io = nwait.http + nwait.exec,
    waiting_signal = nwait.signal,
  }
end

function M.reset()
  if M.in_task() then error("loop.reset must not be called from a loop task", 2) end
  local live = {}
  for task in pairs(tasks) do live[#live + 1] = task end
  tasks, ntasks, runq, waiting, signal_waiters, signal_handlers = {}, 0, {}, {}, {}, {}
  for _, task in ipairs(live) do
    task.done, task.ok, task.error, task.wait = true, false, "cancelled by loop.reset", nil
    pcall(coroutine.close, task.co)
  end
  nwait = { sleep = 0, http = 0, exec = 0, signal = 0 }
  counters = { failed = 0, completed = 0 }
  stop_requested = false
  core.loop_reset()
end

return M
