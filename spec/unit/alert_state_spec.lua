-- certmaint.alert_state: when a notification is told (first, repeat, recovery),
-- as pure functions of a record and the time.
local alert_state = require "certmaint.alert_state"

local HOUR, DAY = 3600, 86400

describe("certmaint.alert_state", function()
  it("tells the first failure, counts the next ones and tells again only after repeat_interval", function()
    local t0 = 1000000
    local rec, tell = alert_state.failed(nil, t0, DAY, "boom", "x")
    assert.equal("first", tell)
    assert.same({ since = t0, notified_at = t0, failures = 1, message = "boom", code = "x" }, rec)
    for i = 1, 23 do
      local _, again = alert_state.failed(rec, t0 + i * HOUR, DAY, "boom " .. i, "x")
      assert.is_nil(again)
    end
    assert.equal(24, rec.failures)
    assert.equal("boom 23", rec.message)
    local _, later = alert_state.failed(rec, t0 + DAY, DAY, "still", "x")
    assert.equal("repeat", later)
    assert.equal(t0 + DAY, rec.notified_at)
    assert.equal(t0, rec.since)
    local _, next_hour = alert_state.failed(rec, t0 + DAY + HOUR, DAY, "still", "x")
    assert.is_nil(next_hour)
  end)

  it("uses 24 h when no interval is given", function()
    local rec = alert_state.failed(nil, 0)
    assert.is_nil(select(2, alert_state.failed(rec, DAY - 1)))
    assert.equal("repeat", select(2, alert_state.failed(rec, DAY)))
  end)

  it("a recovery is told only for a problem that was told", function()
    assert.is_false(alert_state.healed(nil))
    assert.is_false(alert_state.healed({ since = 1, failures = 3 }))
    assert.is_true(alert_state.healed((alert_state.failed(nil, 5))))
  end)

  it("does not page when the wall clock steps back past the last notice", function()
    local rec = alert_state.failed(nil, 10 * DAY, DAY)
    assert.is_nil(select(2, alert_state.failed(rec, 5 * DAY, DAY)))
    assert.equal(5 * DAY, rec.notified_at)
    assert.is_nil(select(2, alert_state.failed(rec, 6 * DAY - 1, DAY)))
    assert.equal("repeat", select(2, alert_state.failed(rec, 6 * DAY, DAY)))
  end)

  it("counts a certificate as expiring within min(before, ratio of its lifetime)", function()
    local ninety = { not_before = 0, not_after = 90 * DAY }
    assert.equal(7 * DAY, alert_state.expiring_threshold(ninety))
    assert.is_false((alert_state.is_expiring(ninety, 83 * DAY - 1)))
    assert.is_true((alert_state.is_expiring(ninety, 83 * DAY)))
    local six = { not_before = 0, not_after = 6 * DAY }
    assert.equal(DAY, alert_state.expiring_threshold(six))
    local yes, left, threshold = alert_state.is_expiring(six, 5.5 * DAY)
    assert.is_true(yes)
    assert.equal(DAY / 2, left)
    assert.equal(DAY, threshold)
    assert.equal(2 * HOUR, alert_state.expiring_threshold(ninety, 2 * HOUR, 0.5))
    assert.equal(45 * DAY, alert_state.expiring_threshold(ninety, 100 * DAY, 0.5))
  end)
end)
