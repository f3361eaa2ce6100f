-- certmaint.hooks: every call into the policy protected, errors logged with
-- their traceback, counted, and survived; runaway hooks stopped.
local hooks = require "certmaint.hooks"
local testing = require "certmaint.testing"
local loop = require "certmaint.loop"

local HERE = debug.getinfo(1, "S").short_src

-- The captured log lines with event=hook_failed.
local function failures(logs)
  local out = {}
  for _, line in ipairs(logs()) do
    if line:find("event=hook_failed", 1, true) then out[#out + 1] = line end
  end
  return out
end

describe("certmaint.hooks", function()
  local logs
  local saved_time, saved_count, saved_event

  before_each(function()
    logs = testing.capture_logs()
    saved_time, saved_count = hooks.DECISION_TIME_LIMIT, hooks.EVENT_INSTRUCTION_LIMIT
    saved_event = hooks.EVENT_TIME_LIMIT
  end)

  after_each(function()
    hooks.DECISION_TIME_LIMIT, hooks.EVENT_INSTRUCTION_LIMIT = saved_time, saved_count
    hooks.EVENT_TIME_LIMIT = saved_event
    testing.reset()
  end)

  describe("decide", function()
    it("returns true and every result of a hook that works", function()
      local r = hooks.new {}
      local ok, a, b, c = r:decide("on_revoked", function(x, y) return x + y, nil, "three" end, 1, 2)
      assert.is_true(ok)
      assert.equal(3, a)
      assert.is_nil(b)
      assert.equal("three", c)
      assert.equal(0, r.errors)
      assert.same({}, failures(logs))
    end)

    it("catches a raising hook, logs it with its traceback and counts it", function()
      local r = hooks.new {}
      local line = debug.getinfo(1, "l").currentline + 1
      local function bad() error("no renewal for you") end
      local ok, err = r:decide("needs_renewal", bad)
      assert.is_false(ok)
      assert.equal(HERE .. ":" .. line .. ": no renewal for you", err)
      assert.equal(1, r.errors)
      local lines = failures(logs)
      assert.equal(1, #lines)
      assert.matches("level=error", lines[1], 1, true)
      assert.matches("hook=needs_renewal", lines[1], 1, true)
      assert.matches('error="' .. HERE .. ":" .. line .. ': no renewal for you"', lines[1], 1, true)
      -- the traceback names the hook's own frame
      assert.matches("traceback=.*stack traceback:.*" .. HERE:gsub("%p", "%%%0") .. ":" .. line .. ": in ", lines[1])
      r:decide("needs_renewal", bad)
      assert.equal(2, r.errors)
    end)

    it("logs a burst of a hook's failures, then counts the rest until the window ends", function()
      local saved_window = hooks.LOG_WINDOW
      local r = hooks.new {}
      local function bad(i) error("bad certificate " .. i) end
      for i = 1, 1000 do assert.is_false((r:decide("needs_renewal", bad, i))) end
      assert.equal(1000, r.errors)
      local all = logs() -- (taking the lines empties the capture)
      local lines = failures(function() return all end)
      assert.equal(hooks.LOG_BURST, #lines)
      assert.matches("bad certificate 1\"", lines[1], 1, true)
      local said = 0
      for _, l in ipairs(all) do
        if l:find("event=hook_failures_not_logged", 1, true) and l:find("hook=needs_renewal", 1, true) then said = said + 1 end
      end
      assert.equal(1, said)
      -- another hook has its own burst
      r:decide("allow_name", bad, 0)
      assert.equal(1, #failures(logs))
      -- the window over, the next line says how many went unlogged
      hooks.LOG_WINDOW = 0
      r:decide("needs_renewal", bad, 1001)
      hooks.LOG_WINDOW = saved_window
      lines = failures(logs)
      assert.equal(1, #lines)
      assert.matches("bad certificate 1001", lines[1], 1, true)
      assert.matches("unlogged_before=" .. (1000 - hooks.LOG_BURST), lines[1], 1, true)
      assert.matches("stack traceback", lines[1], 1, true) -- a logged failure has its traceback
    end)

    it("builds no traceback for a failure it will not log (core.watch_call's traceback = false)", function()
      local core = require "certmaint.core"
      local function bad() error("plain failure") end
      local ok, msg, code = core.watch_call({ seconds = 1, traceback = false }, bad)
      assert.is_false(ok)
      assert.equal("error", code)
      assert.matches("plain failure$", msg)
      assert.not_matches("stack traceback", msg, 1, true)
      ok, msg = core.watch_call({ seconds = 1 }, bad)
      assert.is_false(ok)
      assert.matches("plain failure\nstack traceback", msg)
      ok, msg = core.watch_call({ seconds = 1, traceback = false }, function() error({}) end)
      assert.equal("(error object is a table value)", msg)
      assert.has_error(function() core.watch_call({ traceback = "no" }, bad) end,
        "core.watch_call: option 'traceback' must be a boolean, not string")
      -- the runner asks for none once a hook's burst of logged failures is spent
      local r = hooks.new {}
      for i = 1, hooks.LOG_BURST do
        assert.is_true(r:will_log("needs_renewal"))
        r:decide("needs_renewal", bad, i)
      end
      assert.is_false(r:will_log("needs_renewal"))
      assert.is_true(r:will_log("allow_name"))
    end)

    it("reports only the first line of a multi-line error, and error objects that are not strings", function()
      local r = hooks.new {}
      local ok, err = r:decide("allow_name", function() error("first\nsecond", 0) end)
      assert.is_false(ok)
      assert.equal("first", err)
      ok, err = r:decide("allow_name", function() error({ code = 1 }) end)
      assert.is_false(ok)
      assert.equal("(error object is a table value)", err)
      ok, err = r:decide("allow_name", function()
        error(setmetatable({}, { __tostring = function() return "custom error" end }))
      end)
      assert.is_false(ok)
      assert.equal("custom error", err)
      assert.equal(3, r.errors)
    end)

    it("tells the policy's on_error, and survives on_error failing too", function()
      local seen = {}
      local policy = { on_error = function(e) seen[#seen + 1] = e end }
      local r = hooks.new(policy)
      r:decide("needs_renewal", function() error("boom", 0) end)
      assert.same({ { kind = "hook", hook = "needs_renewal", message = "boom" } }, seen)
      assert.equal(1, r.errors)

      policy.on_error = function() error("on_error broke", 0) end
      local ok = r:decide("needs_renewal", function() error("boom", 0) end)
      assert.is_false(ok)
      assert.equal(3, r.errors) -- the hook and on_error
      local lines = failures(logs)
      assert.matches("hook=on_error", lines[#lines], 1, true)
      assert.matches("on_error broke", lines[#lines], 1, true)
    end)

    it("does not call on_error about itself", function()
      local calls = 0
      local policy = {}
      policy.on_error = function() calls = calls + 1 error("again", 0) end
      local r = hooks.new(policy)
      local ok = r:notify("on_error", policy.on_error, {})
      assert.is_false(ok)
      assert.equal(1, calls)
      assert.equal(1, r.errors)
    end)

    it("stops a runaway decision at its time limit, even one that pcalls its own loop", function()
      hooks.DECISION_TIME_LIMIT = 0.05
      local r = hooks.new {}
      local ok, err = r:decide("needs_renewal", function() while true do end end)
      assert.is_false(ok)
      assert.matches("hook needs_renewal exceeded its time limit of 0.05s", err, 1, true)
      -- a hook that ran out of time is suspended: the next call does not run it
      ok, err = r:decide("needs_renewal", function() return true end)
      assert.is_false(ok)
      assert.matches("is suspended", err, 1, true)
      r.suspended.needs_renewal = nil
      ok, err = r:decide("needs_renewal", function()
        while true do pcall(function() while true do end end) end
      end)
      assert.is_false(ok)
      assert.matches("exceeded its time limit", err, 1, true)
      assert.equal(2, r.errors)
      -- and the runner works normally afterwards
      r.suspended.needs_renewal = nil
      assert.same({ true, 42 }, { r:decide("needs_renewal", function() return 42 end) })
    end)

    it("leaves a debug hook that was set before it in place", function()
      local orig = table.pack(debug.gethook())
      local function mine() end
      debug.sethook(mine, "", 1000000)
      local r = hooks.new {}
      r:decide("needs_renewal", function() return true end)
      r:decide("needs_renewal", function() error("x") end)
      local h, mask, count = debug.gethook()
      if orig[1] then debug.sethook(orig[1], orig[2], orig[3]) else debug.sethook() end
      assert.equal(mine, h)
      assert.equal("", mask)
      assert.equal(1000000, count)
    end)
  end)

  describe("notify", function()
    it("swallows a raising event hook: returns false, logs, counts", function()
      local r = hooks.new {}
      local ok, err = r:notify("on_renewed", function() error("deploy failed", 0) end, { names = { "a.test" } })
      assert.is_false(ok)
      assert.equal("deploy failed", err)
      assert.equal(1, r.errors)
      local lines = failures(logs)
      assert.equal(1, #lines)
      assert.matches("hook=on_renewed", lines[1], 1, true)
    end)

    it("lets an event hook wait in the loop, and the waiting does not count", function()
      hooks.EVENT_INSTRUCTION_LIMIT = 200000 -- two watchdog batches
      local r = hooks.new {}
      local task = loop.spawn(function()
        return r:notify("on_tick", function(tick)
          for _ = 1, 50 do loop.yield() end
          return tick.kind
        end, { kind = "renew" })
      end)
      -- while the hook waits, another task runs far more than its limit
      local busy = loop.spawn(function()
        for _ = 1, 50 do
          for _ = 1, 20000 do end
          loop.yield()
        end
      end)
      loop.run_until_idle()
      assert.is_true(busy.done)
      assert.is_true(task.done)
      assert.same({ true, "renew" }, { table.unpack(task.results, 1, 2) })
      assert.equal(0, r.errors)
    end)

    it("stops an event hook that never yields at its instruction limit", function()
      hooks.EVENT_INSTRUCTION_LIMIT = 1000000
      local r = hooks.new {}
      local ok, err = r:notify("on_tick", function() while true do end end, {})
      assert.is_false(ok)
      assert.matches("hook on_tick exceeded its limit of 1000000 instructions", err, 1, true)
      assert.equal(1, r.errors)
    end)
  end)

  describe("limits (issue 7 A.3)", function()
    local core = require "certmaint.core"

    it("A.3 limits that hold: a call may add only its memory ceiling; the policy's hooks go when its kept state exceeds it", function()
      local kept = {}
      local policy = {
        on_tick = function()
          local t = {}
          for i = 1, 1e9 do t[i] = ("x"):rep(64 * 1024) .. i end
        end,
        on_renewed = function()
          for _ = 1, 3 do kept[#kept + 1] = ("k"):rep(1024 * 1024) .. #kept end
        end,
      }
      local r = hooks.new(policy, { memory_max = 8 * 1024 * 1024 })
      local ok, err, code = r:notify("on_tick", policy.on_tick, {})
      assert.is_false(ok)
      assert.equal("memory", code)
      assert.matches("hook on_tick ran out of memory (not enough memory; it may add 8 MiB to the heap)", err, 1, true)
      assert.is_nil(r.disabled) -- what the failed call made is garbage, not kept
      -- 3 MiB kept per call: the third call passes 8 MiB
      assert.is_true((r:notify("on_renewed", policy.on_renewed, {})))
      assert.is_true((r:notify("on_renewed", policy.on_renewed, {})))
      r:notify("on_renewed", policy.on_renewed, {})
      assert.matches("the policy keeps %d+ MiB between hook calls, more than hook_limits.memory %(8 MiB%)", r.disabled)
      assert.is_nil(policy.on_renewed) -- dropped, so their state can go
      assert.is_nil(policy.on_tick)
      assert.matches("policy hooks disabled", r:problem(), 1, true)
      ok, err, code = r:decide("needs_renewal", function() return true end)
      assert.is_false(ok)
      assert.equal("disabled", code)
      assert.is_true(#failures(logs) >= 1)
      kept = nil
      collectgarbage()
    end)

    it("A.3 a decision hook's time counts only while it runs, and event hooks get their own limit", function()
      hooks.EVENT_TIME_LIMIT = 0.2
      local r = hooks.new {}
      local t0 = core.monotonic()
      local ok, err, code = r:notify("on_tick", function() while true do end end, {})
      assert.is_false(ok)
      assert.equal("timeout", code)
      assert.matches("hook on_tick exceeded its time limit of 0.2s", err, 1, true)
      assert.is_true(core.monotonic() - t0 < 1)
      -- waiting in the loop does not count: 0.5 s of sleeping is fine
      local task = loop.spawn(function()
        return r:notify("on_tick", function() loop.sleep(0.5) return "woke" end, {})
      end)
      loop.run_until(function() return task.done end, { timeout = 5 })
      assert.same({ true, "woke" }, { table.unpack(task.results, 1, 2) })
      hooks.EVENT_TIME_LIMIT = 10
    end)

    it("A.3 a policy's limits come from its hook_limits", function()
      local r = hooks.new { hook_limits = { decision_time = 1, event_time = 3, memory = 2 * 1024 * 1024 } }
      assert.equal(1, r.decision_time)
      assert.equal(3, r.event_time)
      assert.equal(2 * 1024 * 1024, r.memory_max)
    end)

    it("A.3 coroutines made inside a hook, or made earlier and resumed in one, are watched", function()
      hooks.DECISION_TIME_LIMIT = 0.1
      local r = hooks.new {}
      local ok, err = r:decide("needs_renewal", function()
        local co = coroutine.wrap(function() while true do end end)
        co()
      end)
      assert.is_false(ok)
      assert.matches("exceeded its time limit", err, 1, true)
      local spin
      r.suspended = {}
      r:decide("needs_renewal", function() spin = coroutine.wrap(function() while true do end end) return true end)
      r.suspended = {}
      ok, err = r:decide("needs_renewal", function() spin() end)
      assert.is_false(ok)
      assert.matches("exceeded its time limit", err, 1, true)
      -- outside any call the coroutine's inherited hook does nothing
      assert.is_false(core.watching())
    end)

    it("A.3 once the daemon is stopping, policy calls end within the stop grace", function()
      hooks.EVENT_TIME_LIMIT = 30
      local r = hooks.new {}
      core.watch_stopping()
      local t0 = core.monotonic()
      local ok, err, code = r:notify("on_tick", function() while true do end end, {})
      core.watch_stopping(false)
      assert.is_false(ok)
      assert.equal("stopping", code)
      assert.matches("hook on_tick was stopped: the daemon is stopping", err, 1, true)
      assert.is_true(core.monotonic() - t0 < 1)
      hooks.EVENT_TIME_LIMIT = 10
    end)
  end)
end)
