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
  local saved_time, saved_count

  before_each(function()
    logs = testing.capture_logs()
    saved_time, saved_count = hooks.DECISION_TIME_LIMIT, hooks.EVENT_INSTRUCTION_LIMIT
  end)

  after_each(function()
    hooks.DECISION_TIME_LIMIT, hooks.EVENT_INSTRUCTION_LIMIT = saved_time, saved_count
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
end)
