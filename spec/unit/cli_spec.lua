local cli = require "certmaint.cli"

describe("cli.parse_time", function()
  it("reads dates, date-times, Unix seconds and +durations", function()
    assert.equal(1773532800, cli.parse_time("2026-03-15", 0))
    assert.equal(1773532800 + 12 * 3600 + 30 * 60 + 5, cli.parse_time("2026-03-15T12:30:05Z", 0))
    assert.equal(1773532800 + 12 * 3600, cli.parse_time("2026-03-15T12:00Z", 0))
    assert.equal(951782400, cli.parse_time("2000-02-29", 0))
    assert.equal(12345, cli.parse_time("12345", 0))
    assert.equal(100 + 30 * 86400, cli.parse_time("+30d", 100))
  end)

  it("refuses what it cannot read, saying what it expected", function()
    local t, err = cli.parse_time("15/03/2026", 0)
    assert.is_nil(t)
    assert.matches("bad time", err)
    t, err = cli.parse_time("2026-13-01", 0)
    assert.is_nil(t)
    assert.matches("bad date", err)
    t, err = cli.parse_time("+soon", 0)
    assert.is_nil(t)
    assert.is_string(err)
  end)
end)

describe("cli.left", function()
  it("formats time left", function()
    assert.equal("2d3h", cli.left(2 * 86400 + 3 * 3600 + 59))
    assert.equal("1h1m", cli.left(3660))
    assert.equal("1m5s", cli.left(65))
    assert.equal("-5s", cli.left(-5))
  end)
end)

describe("status --json's deploy field (engine STATUS_JSON_FORMS.deploy through cache:status_json)", function()
  local core = require "certmaint.core"
  local form = require("certmaint.engine.status").STATUS_JSON_FORMS.deploy
  local NOW = 1767225600
  local null = core.json_null

  it("is null without on_renewed, one object per target as the encoder would write it", function()
    local c = core.cache_new()
    local deploy = {
      { target = "files:/etc/nginx/certs", state = "failed", serial = "09", deployed_at = NOW - 3600, host = "web1",
        error = 'deploy: mkdir "x": Permission denied', attempts = 2, next_attempt = NOW + 120 },
      { target = "on_renewed", state = "unknown" },
    }
    local text = c:status_json({ false, false }, { names = { { "a.example" }, { "b.example" } },
      deploy = { form(deploy), nil } }, { now = NOW })
    local objs = {
      { names = { "a.example" }, issuer = null, must_staple = null, serial = null, not_before = null, not_after = null, ocsp = null,
        renewal_at = null, time_left = null, deploy = {
        { target = "files:/etc/nginx/certs", state = "failed", serial = "09", deployed_at = "2025-12-31T23:00:00Z",
          host = "web1", error = 'deploy: mkdir "x": Permission denied', attempts = 2,
          next_attempt = "2026-01-01T00:02:00Z" },
        { target = "on_renewed", state = "unknown", serial = null, deployed_at = null, host = null, error = null,
          attempts = 0, next_attempt = null },
      } },
      { names = { "b.example" }, issuer = null, must_staple = null, serial = null, not_before = null, not_after = null, ocsp = null,
        renewal_at = null, time_left = null, deploy = null },
    }
    assert.same(objs, core.json_decode("[" .. text .. "]"))
    local whole = core.json_encode(objs, { pretty = true })
    assert.equal(whole:sub(3, -3), text)
    assert.is_nil(form(nil))
    c:close()
  end)
end)
