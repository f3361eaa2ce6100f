-- Time (issue 12, part 3): the daemon's tickers under steps of the wall clock
-- and a suspend, on the injected clock. Renewal decisions follow wall time;
-- pass intervals and back-offs follow elapsed time (engine/timewatch.lua), so
-- renewals neither storm nor stall.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local DAY, MIN = 86400, 60

-- the watchdog rewrites its health file (fsynced) every minute of fake time:
-- on tmpfs where there is one, so a month of fake time costs no disk flushes
local function health_path()
  local lfs = require "lfs"
  local name = os.tmpname()
  if lfs.attributes("/dev/shm", "mode") == "directory" then
    os.remove(name)
    return "/dev/shm/" .. name:match("[^/]+$") .. "-certmaint-health.json"
  end
  return name
end

local function count(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("time", function()
  local clock, ca, logs, lines, health

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    lines = {}
    health = health_path()
  end)

  after_each(function()
    testing.reset()
    os.remove(health)
  end)

  local function take()
    for _, l in ipairs(logs()) do lines[#lines + 1] = l end
    return lines
  end

  -- an engine whose tickers and watchdog run as under `certmaint run`
  local function daemon(fields, issuer)
    fields.certificates = fields.certificates or { "a.test" }
    fields.issuer = issuer or testing.issuer { ca = ca, lifetime = "30d" }
    fields.health_file = health
    local e = testing.engine(certmaint.policy(fields))
    local eng = e.engine
    eng:watchdog_start()
    eng:start_ticker("renew", "renew_check_interval")
    eng:start_ticker("ocsp", "ocsp_check_interval")
    eng:start_ticker("clean", "clean_interval")
    loop.run_until_idle()
    return e, eng
  end

  -- the daemon running for `seconds` of elapsed time, the loop turning every `step`
  local function run_for(seconds, step)
    step = step or MIN
    local left = seconds
    while left > 0 do
      local d = math.min(step, left)
      clock:advance(d)
      loop.run_until_idle()
      left = left - d
    end
  end

  local function renew_ticks() return count(take(), "event=tick .*kind=renew") end

  it("a step back by a day does not stall the passes", function()
    local e = daemon { renew_check_interval = "10m" }
    run_for(30 * MIN)
    local before = renew_ticks()
    assert.equal(3, before)
    clock:jump(-DAY)
    run_for(30 * MIN)
    assert.equal(before + 3, renew_ticks()) -- on schedule, not a day later
    assert.equal(1, count(take(), "event=clock_jump .*delta=%-86400"))
    -- and what wall time then requires still happens: the renewal at 20 days
    run_for(21 * DAY + DAY - 60 * MIN, 60 * MIN)
    assert.equal(2, e.engine.issuer.issued)
    assert.equal(0, count(take(), "level=error"))
  end)

  it("a step forward by 30 days renews what fell due, within the policy's concurrency, in one pass", function()
    local inflight, max_inflight = 0, 0
    local inner = testing.issuer { ca = ca, lifetime = "30d" }
    local slow = setmetatable({
      issue = function(_, req)
        inflight = inflight + 1
        max_inflight = math.max(max_inflight, inflight)
        for _ = 1, 5 do loop.yield() end -- an order takes a while: others may start meanwhile
        inflight = inflight - 1
        return inner:issue(req)
      end,
    }, { __index = inner })
    local names = {}
    for i = 1, 40 do names[i] = "n" .. i .. ".test" end
    local e = daemon({ certificates = names, renew_check_interval = "10m", concurrency = 4 }, slow)
    assert.equal(40, inner.issued)
    max_inflight = 0
    run_for(20 * MIN)
    local ticks = renew_ticks()
    clock:jump(30 * DAY) -- every certificate expires now by the wall clock
    run_for(10 * MIN)
    assert.equal(ticks + 1, renew_ticks()) -- one pass, not one per missed interval
    assert.equal(80, inner.issued)           -- every one renewed, none twice
    assert.is_true(max_inflight <= 4, "at most the policy's concurrency at once, saw " .. max_inflight)
    assert.equal(4, max_inflight)
    for _, c in ipairs(e:cache()) do assert.is_true(c.not_after > core.now() + 29 * DAY) end
    run_for(30 * MIN)
    assert.equal(80, inner.issued) -- and no storm afterwards
  end)

  it("a suspend (both clocks move, no tick meanwhile): on resume one pass does what wall time requires", function()
    local issuer = testing.issuer { ca = ca, lifetime = "30d" }
    local e = daemon({ renew_check_interval = "10m" }, issuer)
    run_for(20 * MIN)
    local ticks = renew_ticks()
    clock:advance(25 * DAY) -- suspended: the loop did not turn; now it does
    loop.run_until_idle()
    assert.equal(ticks + 1, renew_ticks())
    assert.equal(2, issuer.issued) -- inside its window now: renewed at once
    local after = take()
    assert.equal(0, count(after, "event=clock_jump")) -- a suspend is no step
    assert.equal(0, count(after, "event=pass_stalled")) -- nor a stall: the loop was not running
    assert.equal(1, count(after, "event=resumed"))
    run_for(10 * MIN)
    assert.equal(ticks + 2, renew_ticks()) -- and the next one interval later
    assert.equal(2, e.engine.issuer.issued)
  end)

  describe("back-off of a failing renewal", function()
    local function failing_daemon()
      local issuer = testing.issuer { ca = ca, lifetime = "30d" }
      local e = daemon({ renew_check_interval = "10m" }, issuer)
      issuer.fail = issuer.calls + 1000 -- from now on every call fails
      clock:advance(25 * DAY) -- inside the window (from 20 days), a day back still is
      loop.run_until_idle()
      run_for(10 * MIN)
      local st = e.engine.jobs:status("renew:a.test")
      assert.equal("waiting", st.state)
      return e, issuer, st
    end

    it("is not stretched by a step back", function()
      local e, issuer, st = failing_daemon()
      local calls, wait = issuer.calls, st.next_attempt - core.now()
      assert.is_true(wait > 0 and wait < DAY)
      clock:jump(-DAY)
      run_for(wait - MIN)
      assert.equal(calls, issuer.calls) -- not early either
      run_for(2 * MIN)
      assert.is_true(issuer.calls > calls, "the retry came after its back-off, not a day later")
      assert.equal(1, count(take(), "event=clock_jump"))
      -- and the next one is the back-off's next step away, not a day and more
      local next_wait = e.engine.jobs:status("renew:a.test").next_attempt - core.now()
      assert.is_true(next_wait > 0 and next_wait <= 4 * wait, "next retry in " .. next_wait .. " s")
    end)

    it("does not all fall due at a step forward", function()
      local e, issuer, st = failing_daemon()
      local calls, wait = issuer.calls, st.next_attempt - core.now()
      assert.is_true(wait > 5 * MIN)
      clock:jump(7 * DAY)
      loop.run_until_idle()
      run_for(MIN)
      assert.equal(calls, issuer.calls) -- still waiting out its back-off
      local c = e:cert("a.test")
      assert.is_true(c.next_attempt > core.now(), "the cache's retry time moved with the step")
      run_for(wait + MIN)
      assert.is_true(issuer.calls > calls)
    end)
  end)

  it("the watchdog's view follows elapsed time: a step back neither stalls nor flaps it", function()
    local e = daemon { renew_check_interval = "10m", ocsp_check_interval = "10m", clean_interval = "10m" }
    run_for(30 * MIN)
    clock:jump(-DAY)
    run_for(30 * MIN)
    clock:jump(2 * DAY)
    run_for(30 * MIN)
    assert.is_true(e.engine:daemon_health().healthy)
    assert.equal(0, count(take(), "event=pass_stalled"))
  end)
end)

describe("watchdog", function()
  local clock, ca, logs, health

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    health = health_path()
  end)

  after_each(function()
    testing.reset()
    os.remove(health)
  end)

  local function read_health()
    local f = assert(io.open(health))
    local rec = assert(core.json_decode(f:read("a")))
    f:close()
    return rec
  end

  it("a pass that does not complete within watchdog_intervals is stalled: an error event, health, status --check", function()
    local hang = false
    local policy = certmaint.policy {
      certificates = { "a.test" }, issuer = testing.issuer { ca = ca, lifetime = "30d" },
      renew_check_interval = "10m", health_file = health, watchdog_intervals = 2,
      on_tick = function(tick)
        -- a hook that waits (certmaint.exec, storage...) without using CPU: no time limit stops it
        while hang and tick.kind == "renew" do certmaint.loop.sleep(60) end
      end,
    }
    local e = testing.engine(policy)
    local eng = e.engine
    eng:watchdog_start()
    eng:start_ticker("renew", "renew_check_interval")
    loop.run_until_idle()
    local function run_for(s) for _ = 1, s // 60 do clock:advance(60) loop.run_until_idle() end end
    run_for(30 * 60)
    assert.is_true(read_health().healthy)
    assert.same({}, (eng:daemon_problems(core.now())))
    hang = true
    run_for(40 * 60) -- the pass at 40 min hangs: 2 x 10 min after the one at 30 min it is stalled
    local lines = logs()
    local stalled = {}
    for _, l in ipairs(lines) do if l:find("event=pass_stalled", 1, true) then stalled[#stalled + 1] = l end end
    assert.equal(1, #stalled) -- once, not at every check
    assert.matches("level=error event=pass_stalled", stalled[1], 1, true)
    assert.matches("pass=renew", stalled[1], 1, true)
    assert.matches("last_completed=2026%-01%-01T00:30:00Z", stalled[1])
    local rec = read_health()
    assert.is_false(rec.healthy)
    assert.equal("running", rec.state)
    local problems = eng:daemon_problems(core.now())
    assert.equal(1, #problems)
    assert.matches("^renew pass stalled: last completed 2026%-01%-01T00:30:00Z, %d+s late$", problems[1])
    local h = eng:health(core.now())
    h.daemon = problems
    local line, code = require("certmaint.cli").check_summary(h)
    assert.equal(2, code)
    assert.matches("^certmaint CRITICAL: renew pass stalled", line)
    hang = false
    run_for(2 * 60)
    assert.is_true(read_health().healthy)
    assert.equal(1, count(logs(), "event=pass_recovered pass=renew"))
  end)

  it("a health file not updated for long is stale, one of a dead process is not running", function()
    local e = testing.engine(certmaint.policy { certificates = { "a.test" },
      issuer = testing.issuer { ca = ca }, health_file = health })
    local eng = e.engine
    eng:watchdog_start()
    eng:watchdog_check()
    loop.reset()
    assert.same({}, (eng:daemon_problems(core.now())))
    local problems = eng:daemon_problems(core.now() + 10 * 60) -- 60 s writes, nothing for 10 min
    assert.matches("^daemon health not updated since 2026%-01%-01T00:00:00Z", problems[1])
    local rec = read_health()
    rec.pid = 2 ^ 22 + 12345 -- beyond pid_max: no such process
    rec.pid = math.tointeger(rec.pid)
    local f = assert(io.open(health, "w"))
    f:write((assert(core.json_encode(rec))))
    f:close()
    problems = eng:daemon_problems(core.now())
    assert.matches("^daemon %(pid %d+%) is not running, last seen", problems[1])
    f = assert(io.open(health, "w"))
    f:write("{ torn")
    f:close()
    problems = eng:daemon_problems(core.now())
    assert.matches("is not a health record$", problems[1])
    os.remove(health)
    assert.same({}, (eng:daemon_problems(core.now()))) -- no daemon ever ran: not checked
  end)
end)
