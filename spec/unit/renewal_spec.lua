local renewal = require "certmaint.renewal"

local DAY, HOUR = 86400, 3600
local T0 = 1767225600 -- 2026-01-01T00:00:00Z

-- needs_renewal's first two results (the third is renew_at)
local function due(...)
  local d, reason = renewal.needs_renewal(...)
  return { d, reason }
end

local function cert(lifetime, extra)
  local c = { not_before = T0, not_after = T0 + lifetime, serial = "0a1b2c3d4e5f60718293a4b5c6d7e8f9" }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

describe("certmaint.renewal", function()
  describe("ratio rule", function()
    it("renews a 90-day certificate once 1/3 of its lifetime is left, strictly after the boundary", function()
      local c = cert(90 * DAY)
      local at, why = renewal.renew_at(c)
      assert.equal(T0 + 60 * DAY, at)
      assert.equal("window", why)
      assert.is_false((renewal.needs_renewal(c, at - 1)))
      assert.is_false((renewal.needs_renewal(c, at)))
      local due, reason, when = renewal.needs_renewal(c, at + 1)
      assert.is_true(due)
      assert.equal("window", reason)
      assert.equal(at, when)
    end)

    it("uses an explicit ratio", function()
      local c = cert(90 * DAY)
      assert.equal(T0 + 90 * DAY - 0.25 * 90 * DAY, (renewal.renew_at(c, { ratio = 1 / 4 })))
      assert.is_false((renewal.needs_renewal(c, T0 + 67 * DAY, { ratio = 1 / 4 })))
      assert.is_true((renewal.needs_renewal(c, T0 + 68 * DAY, { ratio = 1 / 4 })))
    end)

    it("defaults to 1/2 for lifetimes under 10 days (certbot, lego)", function()
      local c = cert(6 * DAY)
      local at, why = renewal.renew_at(c)
      assert.equal(T0 + 3 * DAY, at)
      assert.equal("window", why)
      assert.is_false((renewal.needs_renewal(c, T0 + 3 * DAY)))
      assert.same({ true, "window" }, due(c, T0 + 3 * DAY + 1))
      assert.equal(1 / 2, renewal.default_ratio(10 * DAY - 1))
    end)

    it("keeps 1/3 at exactly 10 days", function()
      assert.equal(1 / 3, renewal.default_ratio(10 * DAY))
      local c = cert(10 * DAY)
      assert.near(T0 + 10 * DAY * 2 / 3, renewal.renew_at(c), 1e-6)
    end)

    it("an explicit ratio overrides the short-lived default", function()
      local c = cert(6 * DAY)
      assert.equal(T0 + 6 * DAY - 0.2 * 6 * DAY, (renewal.renew_at(c, { ratio = 0.2 })))
    end)

    it("matches certmagic's currentlyInRenewalWindow", function()
      assert.is_false(renewal.in_window(T0, T0 + 90 * DAY, 1 / 3, T0 + 60 * DAY))
      assert.is_true(renewal.in_window(T0, T0 + 90 * DAY, 1 / 3, T0 + 60 * DAY + 1))
    end)
  end)

  describe("ARI", function()
    local window = { start = T0 + 50 * DAY, ["end"] = T0 + 52 * DAY }

    it("renews at a point inside the window, derived from the serial", function()
      local c = cert(90 * DAY, { ari = window })
      local at, why = renewal.renew_at(c)
      assert.equal("ari", why)
      assert.truthy(at >= window.start and at < window["end"])
      assert.equal(at, renewal.ari_point(c))
      assert.is_false((renewal.needs_renewal(c, at)))
      assert.same({ true, "ari" }, due(c, at + 1))
      -- a pure function: the same certificate always gets the same point
      assert.equal(at, renewal.renew_at(cert(90 * DAY, { ari = window })))
    end)

    it("ignores case and separators in the serial", function()
      local a = renewal.ari_point(cert(90 * DAY, { ari = window, serial = "0A:1B:2C" }))
      local b = renewal.ari_point(cert(90 * DAY, { ari = window, serial = "0a1b2c" }))
      assert.equal(a, b)
    end)

    it("renews at the window's start without a serial", function()
      local c = cert(90 * DAY, { ari = window, serial = nil })
      c.serial = nil
      assert.equal(window.start, renewal.ari_point(c))
      assert.same({ window.start, "ari" }, { renewal.renew_at(c) })
    end)

    it("spreads a fleet across the window", function()
      local buckets, n = {}, 2000
      for i = 1, n do
        local c = cert(90 * DAY, { ari = window, serial = string.format("%032x", i * 7919) })
        local at = renewal.ari_point(c)
        assert.truthy(at >= window.start and at < window["end"])
        local b = math.floor((at - window.start) / (window["end"] - window.start) * 10)
        buckets[b] = (buckets[b] or 0) + 1
      end
      for b = 0, 9 do
        -- uniform would be 200 each
        assert.truthy((buckets[b] or 0) > 120, "bucket " .. b .. " has " .. tostring(buckets[b]))
      end
    end)

    it("replaces the default ratio: a window later than 1/3 is honoured", function()
      local late = { start = T0 + 70 * DAY, ["end"] = T0 + 72 * DAY }
      local c = cert(90 * DAY, { ari = late })
      assert.is_false((renewal.needs_renewal(c, T0 + 61 * DAY)))
      local at, why = renewal.renew_at(c)
      assert.equal("ari", why)
      assert.truthy(at >= late.start)
    end)

    it("does not replace a ratio the operator set explicitly", function()
      local late = { start = T0 + 70 * DAY, ["end"] = T0 + 72 * DAY }
      local c = cert(90 * DAY, { ari = late })
      assert.same({ true, "window" }, due(c, T0 + 61 * DAY, { ratio = 1 / 3 }))
      assert.same({ T0 + 60 * DAY, "window" }, { renewal.renew_at(c, { ratio = 1 / 3 }) })
      -- ratio given but marked as the default: ARI wins again
      assert.is_false((renewal.needs_renewal(c, T0 + 61 * DAY, { ratio = 1 / 3, explicit_ratio = false })))
    end)

    it("renews at once when the CA moves the window into the past", function()
      local past = { start = T0 + 1 * DAY, ["end"] = T0 + 2 * DAY }
      local c = cert(90 * DAY, { ari = past })
      assert.same({ true, "ari" }, due(c, T0 + 3 * DAY))
    end)

    it("is overridden by the emergency floor when the window is too late", function()
      local late = { start = T0 + 89 * DAY, ["end"] = T0 + 89 * DAY + 12 * HOUR }
      local c = cert(90 * DAY, { ari = late })
      local floor = T0 + 90 * DAY - 90 * DAY / 20
      assert.same({ floor, "emergency" }, { renewal.renew_at(c) })
      assert.is_false((renewal.needs_renewal(c, floor)))
      assert.same({ true, "emergency" }, due(c, floor + 1))
    end)

    it("is overridden by the emergency floor when the window lies after expiry", function()
      local bogus = { start = T0 + 100 * DAY, ["end"] = T0 + 101 * DAY }
      local c = cert(90 * DAY, { ari = bogus })
      assert.same({ T0 + 90 * DAY - 4.5 * DAY, "emergency" }, { renewal.renew_at(c) })
    end)

    it("ignores a malformed window", function()
      for _, w in ipairs { { start = T0 + 60 * DAY, ["end"] = T0 }, { start = T0 }, { ["end"] = T0 }, "soon" } do
        local c = cert(90 * DAY, { ari = w })
        assert.is_nil(renewal.ari_point(c))
        assert.same({ T0 + 60 * DAY, "window" }, { renewal.renew_at(c) })
      end
    end)
  end)

  describe("imminent-expiry guard", function()
    it("catches a tiny explicit ratio at 1/50 of the lifetime", function()
      local c = cert(90 * DAY)
      local at, why = renewal.renew_at(c, { ratio = 0.001 })
      assert.equal("expiring", why)
      assert.equal(T0 + 90 * DAY - 90 * DAY / 50, at)
      assert.same({ true, "expiring" }, due(c, at + 1, { ratio = 0.001 }))
    end)

    it("leaves a short-lived certificate five renew passes", function()
      local c = cert(12 * DAY)
      -- 5 daily checks reach further back than 1/3 of twelve days
      assert.same({ T0 + 7 * DAY, "expiring" }, { renewal.renew_at(c, { check_interval = DAY }) })
      -- with the default 10-minute checks the ratio rule is earlier again
      assert.same({ T0 + 8 * DAY, "window" }, { renewal.renew_at(c) })
      local long = cert(90 * DAY)
      assert.same({ T0 + 90 * DAY - 5 * DAY, "expiring" },
        { renewal.renew_at(long, { ratio = 0.01, check_interval = DAY }) })
    end)

    it("never renews in the first half of the lifetime (no renewal storm)", function()
      -- a 30-second certificate with 10-minute checks: certmagic's guard would
      -- call it expiring at once; ours waits for half its life
      local c = cert(30)
      local at = renewal.renew_at(c, { ratio = 0.1 })
      assert.equal(T0 + 15, at)
      assert.is_false((renewal.needs_renewal(c, T0 + 1, { ratio = 0.1 })))
      assert.same({ true, "expiring" }, due(c, T0 + 16, { ratio = 0.1 }))
      assert.same({ T0 + 15, "window" }, { renewal.renew_at(c) })
    end)
  end)

  describe("expired certificates", function()
    it("are due, with reason expired, only after not_after", function()
      local c = cert(90 * DAY)
      assert.same({ true, "window" }, due(c, T0 + 90 * DAY))
      assert.same({ true, "expired" }, due(c, T0 + 90 * DAY + 1))
      assert.same({ true, "expired" }, due(c, T0 + 400 * DAY))
      local a = cert(90 * DAY, { ari = { start = T0 + 100 * DAY, ["end"] = T0 + 101 * DAY } })
      assert.same({ true, "expired" }, due(a, T0 + 91 * DAY))
    end)

    it("handles a zero or negative lifetime without dividing by it", function()
      local c = { not_before = T0, not_after = T0 }
      assert.equal(T0, (renewal.renew_at(c)))
      assert.same({ true, "expired" }, due(c, T0 + 1))
      c = { not_before = T0 + 10, not_after = T0 }
      assert.same({ true, "expired" }, due(c, T0 + 1))
    end)
  end)

  describe("arguments", function()
    it("raise on programming mistakes", function()
      assert.has_error(function() renewal.renew_at(nil) end)
      assert.has_error(function() renewal.renew_at({ not_before = T0 }) end)
      assert.has_error(function() renewal.renew_at(cert(DAY), { ratio = 1 }) end)
      assert.has_error(function() renewal.renew_at(cert(DAY), { ratoi = 0.5 }) end)
      assert.has_error(function() renewal.needs_renewal(cert(DAY), "now") end)
    end)
  end)
  describe("the core's rule (core.renew_at, core.needs_renewal, core.ari_point)", function()
    local core = require "certmaint.core"

    it("is what renewal.renew_at and needs_renewal return", function()
      local window = { start = T0 + 50 * DAY, ["end"] = T0 + 52 * DAY }
      for _, life in ipairs { 30, 6 * DAY, 10 * DAY, 12 * DAY, 90 * DAY } do
        for _, o in ipairs { {}, { ratio = 0.25 }, { ratio = 0.001, check_interval = DAY },
                             { ratio = 1 / 3, explicit_ratio = false } } do
          for _, ari in ipairs { false, true } do
            local c = cert(life, ari and { ari = window } or nil)
            local co = { ratio = o.ratio, explicit_ratio = o.explicit_ratio,
              check_interval = o.check_interval, serial = c.serial, ari = c.ari }
            assert.same({ renewal.renew_at(c, o) }, { core.renew_at(c.not_before, c.not_after, co) })
            for _, now in ipairs { T0, T0 + life / 2, T0 + 51 * DAY, T0 + life, T0 + life + 1 } do
              assert.same({ renewal.needs_renewal(c, now, o) },
                { core.needs_renewal(c.not_before, c.not_after, now, co) })
            end
          end
        end
      end
    end)

    it("core.renewal_guard is the expiring layer's distance from not_after", function()
      for _, life in ipairs { 30, 3600, 6 * DAY, 12 * DAY, 90 * DAY } do
        for _, interval in ipairs { 600, DAY } do
          -- a ratio so small that the guard decides
          local at, layer = core.renew_at(T0, T0 + life, { ratio = 1e-9, check_interval = interval })
          assert.equal("expiring", layer)
          assert.equal(T0 + life - at, core.renewal_guard(T0, T0 + life, interval))
        end
      end
      assert.equal(90 * DAY / 50, core.renewal_guard(T0, T0 + 90 * DAY)) -- default interval
      assert.has_error(function() core.renewal_guard("x", T0) end)
    end)

    it("returns integers for whole seconds", function()
      local at, layer = core.renew_at(T0, T0 + 90 * DAY)
      assert.equals(math.type(at), "integer")
      assert.equals(T0 + 60 * DAY, at)
      assert.equals("window", layer)
      assert.same({ false, nil, T0 + 60 * DAY }, { core.needs_renewal(T0, T0 + 90 * DAY, T0) })
      assert.same({ true, "expired", T0 + 60 * DAY },
        { core.needs_renewal(T0, T0 + 90 * DAY, T0 + 91 * DAY) })
    end)

    it("puts the ARI point at start + FNV-1a32(serial) fraction of the width", function()
      local s, e = T0, T0 + 4294967296
      local _, h = core.fnv1a32("0a1b2c")
      assert.equals(s + h, core.ari_point({ start = s, ["end"] = e }, "0A:1B:2C"))
      assert.equals(s, core.ari_point({ start = s, ["end"] = e }, nil))
      assert.equals(s, core.ari_point({ start = s, ["end"] = e }, "::"))
      assert.is_nil(core.ari_point({ start = e, ["end"] = s }, "0a"))
      assert.is_nil(core.ari_point("soon", "0a"))
      assert.is_nil(core.ari_point({ start = s }, "0a"))
      assert.is_nil(core.ari_point({ start = 0 / 0, ["end"] = e }, "0a"))
    end)

    it("raises on bad options", function()
      assert.error_matches(function() core.renew_at(T0, T0 + DAY, { ratoi = 0.5 }) end,
        'unknown option "ratoi"')
      assert.error_matches(function() core.renew_at(T0, T0 + DAY, { ratio = 1 }) end,
        "ratio' must be a number in %(0, 1%)")
      assert.error_matches(function() core.renew_at(T0, T0 + DAY, { ratio = "x" }) end,
        "ratio' must be a number")
      assert.error_matches(function() core.renew_at(T0, T0 + DAY, { check_interval = -1 }) end,
        "check_interval' must be a non%-negative number")
      assert.error_matches(function() core.renew_at(T0, T0 + DAY, { explicit_ratio = 1 }) end,
        "explicit_ratio' must be a boolean")
      assert.error_matches(function() core.renew_at("x", T0) end, "number expected")
      assert.error_matches(function() core.needs_renewal(T0, T0 + DAY) end, "number expected")
    end)
  end)

  describe("core.fnv1a32", function()
    local core = require "certmaint.core"
    it("gives Go's hash/fnv New32a as 8 hex digits and as an integer", function()
      assert.same({ "811c9dc5", 0x811c9dc5 }, { core.fnv1a32("") })
      assert.same({ "e40c292c", 0xe40c292c }, { core.fnv1a32("a") })
      assert.same({ "bf9cf968", 0xbf9cf968 }, { core.fnv1a32("foobar") })
      assert.equals("10f3abd2", (core.fnv1a32("a\0b"))) -- bytes, NULs included
    end)
  end)
end)
