-- Notifications through the engine (issue 13, part 3): on_failure once per
-- problem and repeat_interval, on_recovered once when it heals, on_expiring,
-- the state surviving a restart, and a raising hook survived. Fake clock,
-- testing issuer and memory storage: the policy logic, not the transports.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local DAY, HOUR = 86400, 3600

describe("engine notifications", function()
  local clock, ca, storage, issuer, seen, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    storage = testing.memory()
    issuer = testing.issuer { ca = ca, lifetime = "30d" }
    seen = {}
    logs = testing.capture_logs()
  end)

  after_each(function() testing.reset() end)

  local function record(event)
    return function(cert, info)
      assert.equal(event, info.event)
      seen[#seen + 1] = { event = event, kind = info.kind, name = info.name, ["repeat"] = info["repeat"],
        failures = info.failures, since = info.since, at = info.at, serial = cert.serial, message = info.message,
        seconds_left = info.seconds_left }
    end
  end

  local function policy(fields)
    fields = fields or {}
    fields.certificates = fields.certificates or { "a.test" }
    fields.issuer = issuer
    if fields.on_failure == nil then fields.on_failure = record("failure") end
    if fields.on_recovered == nil then fields.on_recovered = record("recovered") end
    if fields.on_expiring == nil then fields.on_expiring = record("expiring") end
    return certmaint.policy(fields)
  end

  local function count(event, kind)
    local n = 0
    for _, s in ipairs(seen) do
      if s.event == event and (not kind or s.kind == kind) then n = n + 1 end
    end
    return n
  end

  local function fail_from_now() issuer.fail = issuer.calls + 1000000 end
  local function heal() issuer.fail = 0 end

  -- renew ticks every 10 minutes for `minutes`, retries run as they come due
  local function run_for(e, minutes)
    for _ = 1, minutes // 10 do
      clock:advance(600)
      e:tick("renew")
      e:wait()
    end
  end

  it("tells a failing renewal once over many ticks, then one recovery", function()
    local e = testing.engine(policy(), { storage = storage })
    assert.equal(0, #seen)
    clock:advance(21 * DAY) -- in the renewal window (last third of 30 days)
    fail_from_now()
    run_for(e, 180)
    assert.is_true(issuer.calls >= 4, "the renewal was retried (" .. issuer.calls .. " calls)")
    assert.equal(1, count("failure", "renew"))
    assert.equal(0, count("recovered"))
    local f = seen[1]
    assert.equal("a.test", f.name)
    assert.is_false(f["repeat"])
    assert.equal(1, f.failures)
    assert.matches("planned failure", f.message)
    -- the record is in storage while the problem is open
    local rec = core.json_decode(assert(storage:load(keys.alert("a.test"))))
    assert.equal("a.test", rec.name)
    assert.equal(testing.EPOCH + 21 * DAY + 600, rec.kinds.renew.notified_at)
    heal()
    run_for(e, 120)
    assert.equal(1, count("recovered", "renew"))
    assert.equal(1, count("failure"))
    local r = seen[#seen]
    assert.equal("recovered", r.event)
    assert.equal(f.since, r.since)
    assert.is_true(r.failures >= 2)
    assert.is_nil(storage:load(keys.alert("a.test")), "the record goes with the problem")
    -- healed stays quiet
    run_for(e, 60)
    assert.equal(2, #seen)
  end)

  it("reminds after notify.repeat_interval while the problem stays open", function()
    local e = testing.engine(policy { notify = { repeat_interval = "6h" } }, { storage = storage })
    clock:advance(21 * DAY)
    fail_from_now()
    run_for(e, 5 * 60) -- 5 hours
    assert.equal(1, count("failure"))
    run_for(e, 43 * 60) -- two days in all: retries on the growing back-off
    local notices = {}
    for _, s in ipairs(seen) do if s.event == "failure" then notices[#notices + 1] = s end end
    assert.is_true(#notices >= 2, "a reminder came")
    assert.is_true(#notices <= 48 / 6, "at most one per 6 h")
    for i = 2, #notices do
      assert.is_true(notices[i]["repeat"])
      assert.equal(notices[1].since, notices[i].since)
      assert.is_true(notices[i].at - notices[i - 1].at >= 6 * HOUR)
    end
  end)

  it("does not page again after a restart, and the restarted daemon tells the recovery", function()
    local e = testing.engine(policy(), { storage = storage })
    clock:advance(21 * DAY)
    fail_from_now()
    run_for(e, 60)
    assert.equal(1, count("failure"))
    -- a crash loop: new engines on the same storage, each ticking a while
    for _ = 1, 3 do
      local t = clock:now()
      testing.reset()
      clock = testing.clock(t)
      logs = testing.capture_logs()
      e = testing.engine(policy(), { storage = storage })
      run_for(e, 30)
    end
    assert.equal(1, count("failure"))
    heal()
    run_for(e, 60)
    assert.equal(1, count("recovered", "renew"))
  end)

  it("tells an expiring certificate once, and its renewal as a recovery", function()
    local e = testing.engine(policy(), { storage = storage })
    clock:advance(21 * DAY)
    fail_from_now()
    run_for(e, 60)
    assert.equal(0, count("expiring"))
    clock:advance(4 * DAY) -- 5 days left: 1/6 of 30 days
    run_for(e, 60)
    assert.equal(1, count("expiring"))
    local x = seen[#seen]
    assert.equal("expiring", x.kind)
    assert.is_true(x.seconds_left <= 5 * DAY and x.seconds_left > 4 * DAY)
    clock:advance(12 * HOUR) -- within repeat_interval: no reminder
    run_for(e, 60)
    assert.equal(1, count("expiring"))
    heal()
    run_for(e, 30)
    assert.equal(1, count("recovered", "expiring"))
    assert.equal(1, count("recovered", "renew"))
    run_for(e, 60)
    assert.equal(1, count("expiring"))
  end)

  it("tells a failing deploy (on_renewed raising) and its recovery", function()
    local broken = true
    local e = testing.engine(policy {
      on_renewed = function() if broken then error("disk full") end end,
    }, { storage = storage })
    assert.equal(1, count("failure", "deploy"))
    assert.matches("disk full", seen[1].message)
    run_for(e, 60)
    assert.equal(1, count("failure", "deploy"))
    broken = false
    clock:advance(DAY)
    e:wait()
    run_for(e, 30)
    assert.equal(1, count("recovered", "deploy"))
  end)

  it("a notification hook that raises is logged and maintenance goes on", function()
    local calls = 0
    local e = testing.engine(policy {
      on_failure = function() calls = calls + 1 error("pager is down") end,
    }, { storage = storage })
    clock:advance(21 * DAY)
    fail_from_now()
    run_for(e, 60)
    assert.equal(1, calls)
    local text = table.concat(logs(), "\n")
    assert.matches("event=hook_failed[^\n]*hook=on_failure", text)
    heal()
    run_for(e, 30)
    assert.equal(1, count("recovered", "renew"))
    assert.is_true(e:cert("a.test").not_after > clock:now() + 20 * DAY, "the renewal happened")
  end)

  it("forgets the record of a name no longer managed only after 30 days, telling nothing", function()
    local e = testing.engine(policy { certificates = { "a.test", "b.test" } }, { storage = storage })
    clock:advance(21 * DAY)
    fail_from_now()
    run_for(e, 30)
    assert.equal(2, count("failure", "renew"))
    e.engine:apply_policy(policy { certificates = { "b.test" } })
    run_for(e, 30)
    assert.is_not_nil(storage:load(keys.alert("a.test")), "kept: a name may come back (on_tick manages it again)")
    clock:advance(31 * DAY)
    run_for(e, 30)
    assert.is_nil(storage:load(keys.alert("a.test")))
    assert.is_not_nil(storage:load(keys.alert("b.test")))
    assert.equal(0, count("recovered"))
  end)

  it("keeps nothing when the policy has no notification hooks", function()
    local e = testing.engine(certmaint.policy { certificates = { "a.test" }, issuer = issuer }, { storage = storage })
    clock:advance(21 * DAY)
    fail_from_now()
    run_for(e, 30)
    assert.same({}, storage:list(keys.ALERTS_PREFIX, false) or {})
  end)
end)

describe("notification hook lists", function()
  after_each(function() testing.reset() end)

  it("calls each hook of a list on its own: one that raises does not stop the next", function()
    local logs = testing.capture_logs()
    local clock = testing.clock(testing.EPOCH)
    local issuer = testing.issuer { lifetime = "30d" }
    local got = {}
    local e = testing.engine(certmaint.policy {
      certificates = { "b.test" }, issuer = issuer,
      on_failure = { function() error("first hook broken") end, function(_, info) got[#got + 1] = info.kind end },
    })
    clock:advance(21 * DAY)
    issuer.fail = issuer.calls + 100
    e:tick("renew")
    e:wait()
    assert.same({ "renew" }, got)
    assert.matches("event=hook_failed[^\n]*hook=on_failure%[1%]", table.concat(logs(), "\n"))
  end)

  it("refuses a list holding something else", function()
    assert.has_error(function()
      certmaint.policy { certificates = { "b.test" }, on_failure = { function() end, "nope" } }
    end, nil)
    local ok, err = pcall(certmaint.policy, { certificates = { "b.test" }, on_expiring = { 1 } })
    assert.is_false(ok)
    assert.matches("on_expiring%[1%]", tostring(err))
  end)
end)
