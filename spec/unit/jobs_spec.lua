local core = require "certmaint.core"
local loop = require "certmaint.loop"
local jobs = require "certmaint.jobs"

local T0 = 1767225600 -- 2026-01-01T00:00:00Z
local DAY = 86400

-- Run the loop until nothing is runnable at the current (fake) time.
local function settle() loop.run_until_idle() end

-- Move the fake clock to t and let whatever is due run.
local function advance_to(t)
  local dt = t - core.now()
  if dt > 0 then core.clock_advance(dt) end
  settle()
end

-- The events captured since the last call, as { event = ..., fields... } rows.
local function events(filter)
  local out = {}
  for _, line in ipairs(core.log_take()) do
    local ev = line:match("event=(%S+)")
    if ev and (not filter or ev:match(filter)) then
      local row = { event = ev, line = line }
      for k, v in line:gmatch('(%w[%w_]*)=("[^"]*")') do row[k] = v:sub(2, -2) end
      for k, v in line:gmatch('(%w[%w_]*)=([^"%s]%S*)') do row[k] = row[k] or v end
      out[#out + 1] = row
    end
  end
  return out
end

local function names_of(rows)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.event end
  return out
end

describe("certmaint.jobs", function()
  local q

  before_each(function()
    core.clock_set(T0)
    core.log_config { capture = true, level = "debug" }
    core.log_take()
  end)

  after_each(function()
    if q then q:clear() end
    q = nil
    settle()
    local stats = loop.stats()
    -- no task raised (run_attempt must never throw), none left runnable or on I/O;
    -- a job waiting to retry holds no task, so after clear() none is left, nor a timer
    assert.equal(0, stats.failed)
    assert.equal(0, stats.running)
    assert.equal(0, stats.waiting_io)
    assert.equal(stats.sleeping, stats.tasks)
    assert.equal(0, stats.tasks)
    assert.equal(0, stats.timers)
    assert.equal(0, core.loop_pending().timers)
    loop.reset()
    core.log_config { capture = false, level = "info" }
    core.log_take()
    core.clock_set(nil)
  end)

  it("runs a job and reports it done", function()
    local states = {}
    q = jobs.new { on_state = function(name, state) states[#states + 1] = name .. ":" .. state end }
    local seen
    assert.is_true(q:submit("renew:a", function(attempt) seen = attempt return true end))
    assert.equal("running", q:status("renew:a").state) -- a slot was free
    assert.equal(1, q:pending())
    settle()
    assert.equal(1, seen)
    local st = q:status("renew:a")
    assert.equal("done", st.state)
    assert.equal(1, st.attempts)
    assert.equal(T0, st.first_attempt)
    assert.is_nil(st.last_error)
    assert.same({ "renew:a:queued", "renew:a:running", "renew:a:done" }, states)
    assert.same({ "job_queued", "job_started", "job_done" }, names_of(events("^job_")))
    assert.equal(0, q:pending())
  end)

  describe("de-duplication", function()
    it("refuses a name while it is queued, running or waiting, and accepts it after", function()
      q = jobs.new { concurrency = 1 }
      local release = false
      local fail = true
      local function job()
        while not release do loop.sleep(1) end
        if fail then return nil, "CA down" end
        return true
      end
      assert.is_true(q:submit("blocker", function() loop.sleep(1) return true end))
      assert.is_true(q:submit("j", job))
      assert.equal("queued", q:status("j").state)
      assert.is_false(q:submit("j", job)) -- queued
      settle()
      assert.equal("queued", q:status("j").state)
      advance_to(T0 + 1)
      assert.equal("done", q:status("blocker").state)
      assert.equal("running", q:status("j").state)
      assert.is_false(q:submit("j", job)) -- running
      release = true
      advance_to(T0 + 2)
      assert.equal("waiting", q:status("j").state)
      assert.is_false(q:submit("j", job)) -- waiting to retry
      assert.equal(1, q:waiting())
      assert.equal(0, q:pending())
      fail = false
      advance_to(q:status("j").next_attempt)
      assert.equal("done", q:status("j").state)
      assert.is_true(q:submit("j", function() return true end)) -- done: a new job
      settle()
      assert.equal(1, q:status("j").attempts)
    end)
  end)

  describe("concurrency", function()
    it("runs at most `concurrency` jobs at once, the rest FIFO", function()
      q = jobs.new { concurrency = 2 }
      local running, max_running, order = 0, 0, {}
      for i = 1, 5 do
        q:submit("job" .. i, function()
          order[#order + 1] = i
          running = running + 1
          max_running = math.max(max_running, running)
          loop.sleep(10)
          running = running - 1
          return true
        end)
      end
      assert.equal(5, q:pending())
      settle()
      assert.equal(2, running)
      assert.same({ 1, 2 }, order)
      assert.equal("queued", q:status("job3").state)
      advance_to(T0 + 10)
      assert.same({ 1, 2, 3, 4 }, order)
      advance_to(T0 + 20)
      advance_to(T0 + 30)
      assert.same({ 1, 2, 3, 4, 5 }, order)
      assert.equal(2, max_running)
      assert.equal(0, q:pending())
      for i = 1, 5 do assert.equal("done", q:status("job" .. i).state) end
    end)

    it("frees the slot of a job waiting to retry", function()
      q = jobs.new { concurrency = 1 }
      q:submit("bad", function() return nil, "no" end)
      local ran = false
      q:submit("good", function() ran = true return true end)
      settle()
      assert.equal("waiting", q:status("bad").state)
      assert.is_true(ran)
    end)
  end)

  describe("retries", function()
    it("follows certmagic's schedule exactly under the fake clock", function()
      q = jobs.new {}
      local times = {}
      q:submit("renew:x", function(attempt)
        times[#times + 1] = core.now() - T0
        assert.equal(#times, attempt)
        return nil, "attempt " .. attempt .. " failed", "acme:serverInternal"
      end)
      settle()
      local expect = { 0, 60, 180, 300, 600, 1200, 2400, 3600, 5400, 7200, 10800, 21600, 43200, 64800 }
      for i = 2, #expect do
        local st = q:status("renew:x")
        assert.equal("waiting", st.state)
        assert.equal(T0 + expect[i], st.next_attempt)
        -- nothing happens a second early
        advance_to(st.next_attempt - 1)
        assert.equal(i - 1, #times)
        advance_to(st.next_attempt)
        assert.equal(i, #times)
      end
      assert.same(expect, times)
      local st = q:status("renew:x")
      assert.equal(#expect, st.attempts)
      assert.equal(T0, st.first_attempt)
      assert.equal("attempt 14 failed", st.last_error)
      assert.equal("acme:serverInternal", st.last_code)
    end)

    it("logs job_failed with attempt, retry_in and error, then job_retry", function()
      q = jobs.new {}
      q:submit("renew:y", function() return nil, "CA says no" end)
      settle()
      local ev = events("^job_")
      assert.same({ "job_queued", "job_started", "job_failed" }, names_of(ev))
      local failed = ev[3]
      assert.equal("renew:y", failed.name)
      assert.equal("1", failed.attempt)
      assert.equal("1m", failed.retry_in)
      assert.equal("CA says no", failed.error)
      assert.matches("level=warn", failed.line)
      advance_to(T0 + 60)
      ev = events("^job_")
      assert.same({ "job_retry", "job_started", "job_failed" }, names_of(ev))
      assert.equal("2", ev[1].attempt)
      assert.equal("2m", ev[3].retry_in)
    end)

    it("treats a raised error as a failure, logged with its traceback", function()
      q = jobs.new {}
      q:submit("boom", function() error("kaboom") end)
      settle()
      local st = q:status("boom")
      assert.equal("waiting", st.state)
      assert.matches("kaboom", st.last_error)
      assert.equal("error", st.last_code)
      local failed = events("^job_failed$")[1]
      assert.truthy(failed.line:find("stack traceback", 1, true), failed.line)
      assert.truthy(failed.line:find("jobs_spec.lua", 1, true), failed.line)
    end)

    it("accepts a raised table error and honours its final flag", function()
      q = jobs.new {}
      q:submit("t", function() error({ message = "unauthorized", final = true }) end)
      settle()
      local st = q:status("t")
      assert.equal("failed", st.state)
      assert.equal("unauthorized", st.last_error)
    end)

    it("does not retry final errors", function()
      q = jobs.new {}
      local n = 0
      q:submit("final", function()
        n = n + 1
        return nil, { message = "name refused by CA", final = true }, "acme:rejectedIdentifier"
      end)
      settle()
      local st = q:status("final")
      assert.equal("failed", st.state)
      assert.equal(1, st.attempts)
      assert.is_nil(st.next_attempt)
      assert.equal("name refused by CA", st.last_error)
      assert.equal("acme:rejectedIdentifier", st.last_code)
      advance_to(T0 + DAY)
      assert.equal(1, n)
      local gave_up = events("^job_gave_up$")[1]
      assert.truthy(gave_up)
      assert.matches("level=error", gave_up.line)
      assert.equal(0, q:pending() + q:waiting())
    end)

    it("waits for a later retry_at from the error", function()
      q = jobs.new {}
      q:submit("limited", function() return nil, { message = "rate limited", retry_at = T0 + 3600 } end)
      settle()
      assert.equal(T0 + 3600, q:status("limited").next_attempt)
      assert.equal("1h", events("^job_failed$")[1].retry_in)
    end)

    it("waits for a later retry_after (the ACME client's spelling) from the error", function()
      q = jobs.new {}
      q:submit("limited", function() return nil, { message = "rate limited", retry_after = T0 + 5400 } end)
      settle()
      assert.equal(T0 + 5400, q:status("limited").next_attempt)
      assert.equal("1h30m", events("^job_failed$")[1].retry_in)
    end)

    it("takes the later of retry_after and retry_at, and ignores a retry_after that is not a number", function()
      q = jobs.new {}
      q:submit("both", function() return nil, { message = "x", retry_after = T0 + 600, retry_at = T0 + 900 } end)
      q:submit("junk", function() return nil, { message = "x", retry_after = "soon" } end)
      settle()
      assert.equal(T0 + 900, q:status("both").next_attempt)
      assert.equal(T0 + 60, q:status("junk").next_attempt)
    end)

    it("brings the schedule's retry forward to retry_by, never below MIN_RETRY", function()
      q = jobs.new {}
      q:submit("short", function() return nil, { message = "x", retry_by = T0 + 7.5 } end)
      q:submit("floor", function() return nil, { message = "x", retry_by = T0 + 0.2 } end)
      q:submit("later", function() return nil, { message = "x", retry_by = T0 + 600 } end)
      settle()
      assert.equal(T0 + 7.5, q:status("short").next_attempt)
      assert.equal(T0 + jobs.MIN_RETRY, q:status("floor").next_attempt)
      assert.equal(T0 + 60, q:status("later").next_attempt)
    end)

    it("lets a later retry_after win over retry_by (the CA said when)", function()
      q = jobs.new {}
      q:submit("ca", function() return nil, { message = "x", retry_by = T0 + 5, retry_after = T0 + 300 } end)
      settle()
      assert.equal(T0 + 300, q:status("ca").next_attempt)
    end)

    it("ignores an earlier retry_at", function()
      q = jobs.new {}
      q:submit("early", function() return nil, { message = "x", retry_at = T0 + 1 } end)
      settle()
      assert.equal(T0 + 60, q:status("early").next_attempt)
    end)

    it("gives up after 30 days of retries", function()
      q = jobs.new {}
      local n = 0
      q:submit("doomed", function() n = n + 1 return nil, "still down" end)
      settle()
      local guard = 0
      while q:status("doomed").state == "waiting" do
        advance_to(q:status("doomed").next_attempt)
        guard = guard + 1
        assert.truthy(guard < 1000)
      end
      local st = q:status("doomed")
      assert.equal("failed", st.state)
      -- attempts at 0, 1m, 3m, 5m, 10m, 20m, 40m, 1h, 1.5h, 2h, 3h, 6h, then
      -- every 6h; the one at exactly 30 days is the last
      assert.equal(131, n)
      assert.equal(131, st.attempts)
      assert.equal(T0 + 30 * DAY, core.now())
      assert.equal("still down", st.last_error)
      local gave_up = events("^job_gave_up$")
      assert.equal(1, #gave_up)
      assert.equal("131", gave_up[1].attempt)
    end)

    it("honours custom intervals and a shorter maximum", function()
      q = jobs.new { retry_intervals = { "10s", 20 }, max_retry_duration = "1m" }
      local times = {}
      q:submit("c", function() times[#times + 1] = core.now() - T0 return nil, "no" end)
      settle()
      while q:status("c").state == "waiting" do advance_to(q:status("c").next_attempt) end
      assert.same({ 0, 10, 30, 50, 70 }, times)
      assert.equal("failed", q:status("c").state)
    end)

    it("clears the error after a success", function()
      q = jobs.new {}
      local n = 0
      q:submit("flaky", function()
        n = n + 1
        if n < 4 then return nil, "flake " .. n end
        return true
      end)
      settle()
      for _ = 1, 3 do advance_to(q:status("flaky").next_attempt) end
      local st = q:status("flaky")
      assert.equal("done", st.state)
      assert.equal(4, st.attempts)
      assert.is_nil(st.last_error)
      assert.is_nil(st.last_code)
      assert.is_nil(st.next_attempt)
      assert.equal(T0 + 300, core.now())
      local ev = names_of(events("^job_[dfr]"))
      assert.same({ "job_failed", "job_retry", "job_failed", "job_retry", "job_failed", "job_retry", "job_done" }, ev)
    end)
  end)

  describe("retry state is data", function()
    it("a waiting job holds no coroutine and no timer: one timer for the queue", function()
      q = jobs.new { concurrency = 4 }
      for i = 1, 50 do
        q:submit("j" .. i, function() return nil, { message = "down", retry_at = T0 + 60 + i } end)
      end
      settle()
      assert.equal(50, q:waiting())
      assert.equal(0, q:pending())
      local stats = loop.stats()
      assert.equal(0, stats.tasks)
      assert.equal(0, stats.sleeping)
      assert.equal(1, stats.timers)
      assert.equal(1, core.loop_pending().timers)
      assert.equal(T0 + 61, q:next_wakeup())
      -- the timer moves with the earliest job
      q:cancel("j1")
      assert.equal(T0 + 62, q:next_wakeup())
      assert.equal(1, core.loop_pending().timers)
      advance_to(T0 + 61)
      assert.equal(49, q:waiting())
      advance_to(T0 + 70)
      -- j2..j10 were due: retried (and failed again, 2 min on)
      assert.equal(49, q:waiting())
      assert.equal(T0 + 71, q:next_wakeup()) -- j11
      assert.equal("waiting", q:status("j2").state)
      assert.equal(2, q:status("j2").attempts)
      assert.equal(T0 + 70 + 120, q:status("j2").next_attempt) -- from the end of the attempt
      assert.equal(1, core.loop_pending().timers)
      assert.equal(0, loop.stats().tasks)
      q:clear()
      assert.is_nil(q:next_wakeup())
      assert.equal(0, core.loop_pending().timers)
      assert.equal(0, loop.stats().timers)
    end)

    it("re-queues jobs due at the same time in the order they failed, within the bound", function()
      q = jobs.new { concurrency = 2 }
      local order = {}
      for i = 1, 5 do
        q:submit("j" .. i, function(attempt)
          if attempt == 1 then return nil, "first" end
          order[#order + 1] = i
          loop.sleep(1)
          return true
        end)
      end
      settle()
      assert.equal(5, q:waiting())
      advance_to(T0 + 60)
      assert.same({ 1, 2 }, order)
      assert.equal("queued", q:status("j3").state)
      advance_to(T0 + 61)
      advance_to(T0 + 62)
      assert.same({ 1, 2, 3, 4, 5 }, order)
      advance_to(T0 + 63)
      for i = 1, 5 do assert.equal("done", q:status("j" .. i).state) end
    end)

    it("a submit of a waiting job that is due is its next attempt (auto)", function()
      q = jobs.new {}
      local fns = {}
      q:submit("j", function() fns[#fns + 1] = "old" return nil, "no" end)
      settle()
      core.clock_advance(60) -- due, but the timer has not been seen yet
      assert.is_true(q:submit("j", function() fns[#fns + 1] = "new" return true end))
      settle()
      assert.same({ "old", "new" }, fns)
      local st = q:status("j")
      assert.equal("done", st.state)
      assert.equal(2, st.attempts)
      assert.equal(0, core.loop_pending().timers)
    end)

    describe("manual", function()
      it("waits as data with nothing scheduled, and retries on a due submit", function()
        q = jobs.new { retry = "manual" }
        local times = {}
        local function fail(attempt)
          times[#times + 1] = core.now() - T0
          return nil, "attempt " .. attempt .. " failed", "acme:serverInternal"
        end
        assert.is_true(q:submit("renew:x", fail))
        settle()
        local st = q:status("renew:x")
        assert.equal("waiting", st.state)
        assert.equal(T0 + 60, st.next_attempt)
        assert.equal(T0 + 60, q:next_wakeup())
        assert.equal(0, loop.stats().tasks)
        assert.equal(0, loop.stats().timers)
        assert.equal(0, core.loop_pending().timers)
        -- nothing runs by itself
        advance_to(T0 + DAY)
        assert.same({ 0 }, times)
        assert.equal(1, q:waiting())
        core.clock_set(T0 + 59)
        assert.is_false(q:submit("renew:x", fail)) -- not yet due
        core.clock_set(T0 + 60)
        assert.is_true(q:submit("renew:x", fail))
        assert.equal("running", q:status("renew:x").state)
        assert.is_false(q:submit("renew:x", fail)) -- running
        settle()
        st = q:status("renew:x")
        assert.equal("waiting", st.state)
        assert.equal(2, st.attempts)
        assert.equal(T0, st.first_attempt)
        -- the back-off went on: 2 min after the second failure
        assert.equal(T0 + 60 + 120, st.next_attempt)
        assert.equal("attempt 2 failed", st.last_error)
        assert.same({ 0, 60 }, times)
        local ev = names_of(events("^job_"))
        assert.same({ "job_queued", "job_started", "job_failed", "job_retry", "job_started", "job_failed" }, ev)
        -- a late submit is fine: the schedule counts from the end of the attempt
        core.clock_set(T0 + 1000)
        assert.is_true(q:submit("renew:x", function() return true end))
        settle()
        st = q:status("renew:x")
        assert.equal("done", st.state)
        assert.equal(3, st.attempts)
        assert.is_nil(q:next_wakeup())
      end)

      it("follows the same schedule and gives up after 30 days", function()
        q = jobs.new { retry = "manual" }
        local n = 0
        local function job() n = n + 1 return nil, "still down" end
        q:submit("doomed", job)
        settle()
        local expect = { 60, 180, 300, 600, 1200, 2400, 3600, 5400, 7200, 10800, 21600, 43200 }
        for _, at in ipairs(expect) do
          assert.equal(T0 + at, q:next_wakeup())
          core.clock_set(q:next_wakeup())
          assert.is_true(q:submit("doomed", job))
          settle()
        end
        local guard = 0
        while q:status("doomed").state == "waiting" do
          core.clock_set(q:next_wakeup())
          assert.is_true(q:submit("doomed", job))
          settle()
          guard = guard + 1
          assert.truthy(guard < 1000)
        end
        assert.equal(131, n)
        assert.equal("failed", q:status("doomed").state)
        assert.is_nil(q:next_wakeup())
        assert.is_true(q:submit("doomed", function() return true end)) -- failed: a new job
        settle()
        assert.equal(1, q:status("doomed").attempts)
      end)

      it("does not keep the function of a waiting job", function()
        q = jobs.new { retry = "manual" }
        local big = setmetatable({}, { __mode = "k" })
        do
          local payload = {}
          big[payload] = true
          q:submit("j", function() local _ = payload return nil, "no" end)
        end
        settle()
        collectgarbage()
        collectgarbage()
        assert.is_nil(next(big))
        assert.equal("waiting", q:status("j").state)
      end)

      it("cancel and clear forget waiting jobs", function()
        q = jobs.new { retry = "manual" }
        q:submit("a", function() return nil, "x" end)
        q:submit("b", function() return nil, { message = "x", retry_at = T0 + 3600 } end)
        settle()
        assert.equal(T0 + 60, q:next_wakeup())
        assert.is_true(q:cancel("a"))
        assert.equal(T0 + 3600, q:next_wakeup())
        q:clear()
        assert.is_nil(q:next_wakeup())
        assert.equal(0, q:waiting())
        core.clock_set(T0 + DAY)
        assert.is_true(q:submit("b", function() return true end)) -- a new job
        settle()
        assert.equal(1, q:status("b").attempts)
      end)
    end)

    it("next_wakeup is the earliest next_attempt, or nil", function()
      q = jobs.new {}
      assert.is_nil(q:next_wakeup())
      q:submit("late", function() return nil, { message = "x", retry_at = T0 + 7200 } end)
      q:submit("soon", function() return nil, "x" end)
      q:submit("ok", function() return true end)
      settle()
      assert.equal(T0 + 60, q:next_wakeup())
      q:cancel("soon")
      assert.equal(T0 + 7200, q:next_wakeup())
    end)

    it("next_wakeup stays the earliest through failures, cancels and retries (randomised)", function()
      q = jobs.new { retry = "manual" }
      local rng = 12345
      local function rand(n) rng = (rng * 1103515245 + 12345) % 2147483648 return rng % n end
      local function earliest()
        local min
        for _, st in ipairs(q:list()) do
          if st.state == "waiting" and (not min or st.next_attempt < min) then min = st.next_attempt end
        end
        return min
      end
      local function failing() return nil, { message = "x", retry_at = core.now() + 60 + rand(5000) } end
      for i = 1, 300 do q:submit("j" .. i, failing) end
      settle()
      for _ = 1, 400 do
        local name = "j" .. (1 + rand(300))
        local st = q:status(name)
        local op = rand(3)
        if op == 0 then
          q:cancel(name)
        elseif st and st.state == "waiting" then
          core.clock_set(math.max(core.now(), st.next_attempt))
          assert.is_true(q:submit(name, failing))
          settle()
        elseif not st then
          q:submit(name, failing)
          settle()
        end
        assert.equal(earliest(), q:next_wakeup())
      end
    end)

    it("10,000 failing jobs: coroutines and timers O(concurrency), not O(N)", function()
      for _, mode in ipairs { "auto", "manual" } do
        q = jobs.new { concurrency = 8, retry = mode }
        collectgarbage()
        local heap0 = collectgarbage("count")
        local max_tasks = 0
        for i = 1, 10000 do
          q:submit("renew:" .. i, function() return nil, "CA down" end)
        end
        while q:pending() > 0 do
          loop.step(0)
          max_tasks = math.max(max_tasks, loop.stats().tasks)
        end
        collectgarbage()
        local kib = collectgarbage("count") - heap0
        assert.equal(10000, q:waiting())
        assert.is_true(max_tasks <= 8, max_tasks .. " tasks")
        assert.equal(0, loop.stats().tasks)
        assert.equal(mode == "auto" and 1 or 0, core.loop_pending().timers)
        -- what is left is the jobs' records (name, counters, times, error):
        -- about 600 bytes each, where a sleeping coroutine per job took 2.8 KB
        assert.is_true(kib * 1024 / 10000 < 1024, ("%s: %.0f bytes a job"):format(mode, kib * 1024 / 10000))
        q:clear()
        q = nil
        core.log_take()
      end
    end)
  end)

  describe("cancel and clear", function()
    it("forgets queued and waiting jobs, lets a running one finish without retry", function()
      q = jobs.new { concurrency = 1 }
      local ran = {}
      q:submit("run", function() ran.run = (ran.run or 0) + 1 loop.sleep(5) return nil, "fail" end)
      q:submit("queued", function() ran.queued = true return true end)
      settle()
      assert.equal("running", q:status("run").state)
      assert.is_true(q:cancel("queued"))
      assert.is_nil(q:status("queued"))
      assert.is_true(q:cancel("run"))
      assert.is_true(q:status("run").cancelled)
      assert.is_false(q:submit("run", function() return true end)) -- still running
      advance_to(T0 + 5)
      assert.is_nil(q:status("run"))
      advance_to(T0 + DAY)
      assert.equal(1, ran.run)
      assert.is_nil(ran.queued)
      assert.is_false(q:cancel("nothing"))

      q:submit("wait", function() ran.wait = (ran.wait or 0) + 1 return nil, "fail" end)
      settle()
      assert.equal("waiting", q:status("wait").state)
      assert.is_true(q:cancel("wait"))
      assert.is_nil(q:status("wait"))
      assert.equal(0, q:waiting())
      advance_to(T0 + 2 * DAY)
      assert.equal(1, ran.wait)
    end)

    it("clear empties the queue", function()
      q = jobs.new { concurrency = 1 }
      local ran = 0
      for i = 1, 3 do q:submit("j" .. i, function() ran = ran + 1 return nil, "x" end) end
      q:clear()
      -- j1 already had the slot: it stays reserved until its task sees the cancel
      assert.equal(1, #q:list())
      assert.is_true(q:list()[1].cancelled)
      settle()
      assert.same({}, q:list())
      assert.equal(0, q:pending())
      assert.equal(0, ran)
    end)
  end)

  describe("list and status", function()
    it("lists every job sorted by name", function()
      q = jobs.new {}
      q:submit("b", function() return true end)
      q:submit("a", function() return nil, "x" end)
      settle()
      local l = q:list()
      assert.equal(2, #l)
      assert.equal("a", l[1].name)
      assert.equal("waiting", l[1].state)
      assert.equal("b", l[2].name)
      assert.equal("done", l[2].state)
      assert.is_nil(q:status("c"))
    end)

    it("reports an on_state callback that raises, and carries on", function()
      q = jobs.new { on_state = function() error("bad callback") end }
      q:submit("x", function() return true end)
      settle()
      assert.equal("done", q:status("x").state)
      assert.truthy(#events("^job_on_state_failed$") > 0)
    end)
  end)

  describe("arguments", function()
    it("raise on programming mistakes", function()
      assert.has_error(function() jobs.new { concurency = 2 } end)
      assert.has_error(function() jobs.new { concurrency = 0 } end)
      assert.has_error(function() jobs.new { concurrency = "2" } end)
      assert.has_error(function() jobs.new { retry_intervals = {} } end)
      assert.has_error(function() jobs.new { retry_intervals = { "1 minute" } } end)
      assert.has_error(function() jobs.new { on_state = 1 } end)
      assert.has_error(function() jobs.new { retry = "sometimes" } end, 'jobs.new: retry must be "auto" or "manual"')
      q = jobs.new {}
      assert.has_error(function() q:submit(nil, function() end) end)
      assert.has_error(function() q:submit("x", "not a function") end)
    end)

    it("exports certmagic's schedule", function()
      assert.same({ 60, 120, 120, 300, 600, 1200, 1200, 1800, 1800, 3600, 10800, 21600 }, jobs.CERTMAGIC_RETRY_INTERVALS)
      assert.equal(30 * DAY, jobs.MAX_RETRY_DURATION)
    end)
  end)
end)
