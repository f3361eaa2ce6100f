-- Every time in a log line is RFC 3339 (UTC, whole seconds), as `ts` is: a
-- whole certificate life (obtain, renew, a failing renewal and its retry, a
-- clean pass, an OCSP pass) logs no raw Unix time in any field.
local testing = require "certmaint.testing"
local certmaint = require "certmaint"

describe("log lines", function()
  after_each(testing.reset)

  it("carry every time as RFC 3339, never as Unix seconds", function()
    local clock = testing.clock(testing.EPOCH)
    local logs = testing.capture_logs()
    local policy = certmaint.policy {
      certificates = { "a.test", { "b.test", "c.test" } },
      issuer = certmaint.issuer.internal { lifetime = "9d" },
      on_tick = function() end,
    }
    local e = testing.engine(policy, { clock = clock, storage = testing.memory() })
    clock:advance("5d"); e:tick("renew"); e:wait()
    clock:advance("1d"); e:tick("clean"); e:tick("ocsp")
    local e2 = testing.engine(certmaint.policy { certificates = { "d.test" }, issuer = testing.issuer { fail = 1 } },
      { clock = clock, storage = testing.memory() })
    clock:advance("1h"); e2:tick("renew"); e2:wait()
    local lines = logs()
    assert.is_true(#lines > 20, "too few lines to judge: " .. #lines)
    local seen_times = 0
    local lo, hi = testing.EPOCH - 20 * 365 * 86400, testing.EPOCH + 100 * 365 * 86400
    for _, line in ipairs(lines) do
      for key, value in line:gmatch(" ([%w_]+)=(%S+)") do
        local n = tonumber(value)
        assert.is_false(n ~= nil and n >= lo and n <= hi, "raw Unix time in " .. key .. "=: " .. line)
        if value:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$") and key ~= "ts" then seen_times = seen_times + 1 end
      end
    end
    assert.is_true(seen_times > 5, "no RFC 3339 times seen in fields")
    local text = table.concat(lines, "\n")
    assert.matches("event=tick at=2026%-01%-06T00:00:00Z", text)
  end)
end)
