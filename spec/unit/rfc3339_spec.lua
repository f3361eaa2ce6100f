-- certmaint.rfc3339: the one RFC 3339 module.
local rfc3339 = require "certmaint.rfc3339"

describe("rfc3339", function()
  it("formats as Go's RFC3339Nano (UTC, trailing zeros dropped)", function()
    assert.equal("2023-11-14T22:13:20Z", rfc3339.format(1700000000))
    assert.equal("2023-11-14T22:13:20.25Z", rfc3339.format(1700000000.25))
    assert.equal("1970-01-01T00:00:00.000001Z", rfc3339.format(0.000001))
    assert.equal("2023-11-14T22:13:21Z", rfc3339.format(1700000000.9999999999))
  end)

  it("iso gives whole seconds", function()
    assert.equal("2026-01-01T00:00:00Z", rfc3339.iso(1767225600))
    assert.equal("2026-01-01T00:00:00Z", rfc3339.iso(1767225600.99))
  end)

  it("iso (in C) agrees with os.date, before 1970 and on leap days too", function()
    local function date(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) end
    for _, t in ipairs { 0, -1, -0.5, 59, 86399, 86400, 951782400, 951868799.9, 1709164800,
                         253402300799, 4102444800, -2208988800 } do
      assert.equal(date(t), rfc3339.iso(t))
    end
    local rng = 12345
    for _ = 1, 2000 do
      rng = (rng * 1103515245 + 12345) % 2147483648
      local t = (rng / 2147483648) * 1.2e10 - 4e9 -- 1843 .. 2350
      assert.equal(date(t), rfc3339.iso(t))
    end
    -- four-digit years, as RFC 3339 writes them (glibc's %Y would give "1")
    assert.equal("0001-01-01T00:00:00Z", rfc3339.iso(-62135596800))
  end)

  it("iso refuses what is not a finite time", function()
    for _, bad in ipairs { 0 / 0, math.huge, -math.huge, 2e15 } do
      assert.error_matches(function() rfc3339.iso(bad) end, "finite number of Unix seconds")
    end
    assert.error_matches(function() rfc3339.iso("soon") end, "number expected")
    assert.error_matches(function() rfc3339.iso() end, "number expected")
  end)

  it("parses Z, offsets and fractions", function()
    assert.equal(1700000000, rfc3339.parse("2023-11-14T22:13:20Z"))
    assert.equal(1700000000.25, rfc3339.parse("2023-11-14T22:13:20.25Z"))
    assert.equal(1709294395.123456789, rfc3339.parse("2024-03-01T12:59:55.123456789+01:00"))
    assert.equal(1700000000, rfc3339.parse("2023-11-14t17:13:20-05:00"))
    assert.equal(0, rfc3339.parse("1970-01-01T00:00:00z"))
  end)

  it("round-trips", function()
    for _, t in ipairs { 0, 1, 951782400, 1700000000.5, 4102444800 } do
      assert.equal(t, rfc3339.parse(rfc3339.format(t)))
    end
  end)

  it("refuses what is not RFC 3339", function()
    for _, bad in ipairs { "", "2023-11-14", "2023-11-14 22:13:20Z", "2023-13-01T00:00:00Z",
      "2023-11-14T24:00:00Z", "2023-11-14T22:13:20", "2023-11-14T22:13:20+0100",
      "2023-11-14T22:13:20.Z", ("9"):rep(65), 42 } do
      assert.is_nil(rfc3339.parse(bad), tostring(bad))
    end
  end)

  it("counts days from the civil calendar", function()
    assert.equal(0, rfc3339.days_from_civil(1970, 1, 1))
    assert.equal(11016, rfc3339.days_from_civil(2000, 2, 29))
    assert.equal(-1, rfc3339.days_from_civil(1969, 12, 31))
    assert.equal(20454, rfc3339.days_from_civil(2026, 1, 1))
  end)
end)
