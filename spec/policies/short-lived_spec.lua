local testing = require "certmaint.testing"
local core = require "certmaint.core"
local helpers = require "helpers.policies"

describe("policies/short-lived.lua", function()
  after_each(testing.reset)

  it("names its issuer on the first line", function()
    assert.matches("^%-%- issuer: ", helpers.read(helpers.ROOT .. "/policies/short-lived.lua"))
  end)

  it("renews 6-day certificates between 40% and 50% of their life", function()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/short-lived.lua", { env = {} }))
    local life = 6 * 86400
    for i = 1, 50 do
      local cert = { not_before = 0, not_after = life, serial = string.format("%032x", i * 7919) }
      assert.is_false(policy.needs_renewal(cert, 0.4 * life - 1))
      assert.is_true(policy.needs_renewal(cert, 0.5 * life))
    end
  end)

  it("spreads a fleet's renewals instead of sending them at once", function()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/short-lived.lua", { env = {} }))
    local life = 6 * 86400
    local moments = {}
    for i = 1, 20 do
      local cert = { not_before = 0, not_after = life, serial = core.sha256_hex("serial " .. i):sub(1, 32) }
      local lo, hi = 0, life
      while hi - lo > 1 do
        local mid = (lo + hi) // 2
        if policy.needs_renewal(cert, mid) then hi = mid else lo = mid end
      end
      moments[hi] = true
    end
    local distinct = 0
    for _ in pairs(moments) do distinct = distinct + 1 end
    assert.is_true(distinct >= 15)
  end)

  it("renews every certificate before it expires, for a month of fake time", function()
    local clock = testing.clock(testing.EPOCH)
    local e = testing.engine(assert(testing.load_policy(helpers.ROOT .. "/policies/short-lived.lua", { env = {} })), { clock = clock, storage = testing.memory() })
    for _ = 1, 30 * 24 * 12 do -- every 5 minutes for 30 days
      clock:advance(300)
      e:tick("renew")
      for _, c in ipairs(e:cache()) do assert.is_true(c.not_after > clock:now()) end
    end
    assert.is_true(#e:cache() == 3)
  end)
end)
