local duration = require "certmaint.duration"

describe("certmaint.duration", function()
  describe("parse", function()
    local good = {
      { 0, 0 }, { 90, 90 }, { 1.5, 1.5 }, { 86400 * 365, 86400 * 365 },
      { "90s", 90 }, { "10m", 600 }, { "1h", 3600 }, { "7d", 604800 },
      { "1h30m", 5400 }, { "1d2h3m4s", 93784 }, { "0s", 0 }, { "1.5h", 5400 },
      { "0.5s", 0.5 }, { "2d12h", 216000 }, { "100m", 6000 },
    }
    for _, case in ipairs(good) do
      it("accepts " .. string.format("%q", tostring(case[1])), function()
        local v, err = duration.parse(case[1])
        assert.is_nil(err)
        assert.equal(case[2], v)
      end)
    end

    it("returns integers for whole strings", function()
      assert.equal("integer", math.type(duration.parse("10m")))
    end)

    local bad = {
      "", "10", "-5m", "5x", "1.5.2h", "10 m", " 10m", "10m ", "1h 30m", "5ms", "2w",
      "1m1m", "30m1h", "h", "1.h", ".5h", "1H", "ten minutes", "10 minutes", "1e3s",
      "0x10s", "+5m", string.rep("1", 100) .. "s",
    }
    for _, s in ipairs(bad) do
      it("refuses " .. string.format("%q", s), function()
        local v, err, code = duration.parse(s, "renew_check_interval")
        assert.is_nil(v)
        assert.equal("invalid", code)
        assert.matches('^renew_check_interval: bad duration "', err)
        assert.truthy(err:find('(use seconds or "90s", "10m", "1h", "7d")', 1, true))
      end)
    end

    it("quotes the value back, bounded", function()
      local _, err = duration.parse("10 minutes")
      assert.equal('bad duration "10 minutes" (use seconds or "90s", "10m", "1h", "7d")', err)
      _, err = duration.parse(string.rep("x", 500))
      assert.truthy(#err < 200)
    end)

    it("refuses negative and non-finite numbers", function()
      for _, v in ipairs { -1, -0.5, 1 / 0, -1 / 0, 0 / 0 } do
        local secs, err, code = duration.parse(v, "f")
        assert.is_nil(secs)
        assert.equal("invalid", code)
        assert.matches("^f: bad duration", err)
      end
    end)

    it("refuses other types, naming the type", function()
      for _, v in ipairs { true, {}, print } do
        local secs, err = duration.parse(v)
        assert.is_nil(secs)
        assert.truthy(err:find("got " .. type(v), 1, true))
      end
      assert.is_nil((duration.parse(nil)))
    end)
  end)

  describe("format", function()
    local cases = {
      { 0, "0s" }, { 1, "1s" }, { 59, "59s" }, { 60, "1m" }, { 90, "1m30s" },
      { 3600, "1h" }, { 5400, "1h30m" }, { 86400, "1d" }, { 604800, "7d" },
      { 93784, "1d2h3m4s" }, { 0.25, "0.25s" }, { 3600.5, "1h0.5s" },
      { 59.9996, "1m" }, { -90, "-1m30s" }, { 86400 * 30, "30d" },
    }
    for _, case in ipairs(cases) do
      it(tostring(case[1]) .. " -> " .. case[2], function()
        assert.equal(case[2], duration.format(case[1]))
      end)
    end

    it("round-trips through parse", function()
      for _, v in ipairs { 1, 61, 3599, 3601, 86399, 90061, 2592000, 1.25, 7200.125 } do
        assert.equal(v, duration.parse(duration.format(v)))
      end
    end)

    it("raises on a non-number (a programming mistake)", function()
      assert.has_error(function() duration.format("10m") end)
    end)
  end)
end)
