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

describe("cli.status_row_text (status --json, one row)", function()
  local core = require "certmaint.core"
  local NOW = 1767225600

  -- the object status --json prints for row r, as the core's encoder writes it
  local function encoded(obj)
    local text = core.json_encode(setmetatable({ obj }, core.json_array_mt), { pretty = true })
    return text:sub(3, -3) -- inside "[\n" … "\n]"
  end

  local function expect(r, obj)
    local text = cli.status_row_text(r, NOW)
    assert.same(obj, core.json_decode(text))
    assert.equal(encoded(obj), text) -- the very text, keys sorted, two-space indent
  end

  it("writes a certificate with a staple and a retry as the encoder would", function()
    expect({
      names = { "example.com", "www.example.com" }, managed = true, issuer = "CN=R3,O=Let's Encrypt,C=US",
      serial = "0a1b", not_before = NOW - 86400, not_after = NOW + 86400, renewal_at = NOW + 3600,
      renewal_due = false, attempts = 2, next_attempt = NOW + 60, last_error = "planned",
      ocsp = { status = "good", this_update = NOW - 60, next_update = NOW + 7 * 86400 },
    }, {
      names = { "example.com", "www.example.com" }, managed = true, issuer = "CN=R3,O=Let's Encrypt,C=US",
      serial = "0a1b", not_before = "2025-12-31T00:00:00Z", not_after = "2026-01-02T00:00:00Z",
      renewal_at = "2026-01-01T01:00:00Z", renewal_due = false, attempts = 2,
      next_attempt = "2026-01-01T00:01:00Z", last_error = "planned", time_left = 86400, deploy = core.json_null,
      ocsp = { status = "good", this_update = "2025-12-31T23:59:00Z", next_update = "2026-01-08T00:00:00Z" },
    })
  end)

  it("writes null for what is not known, and never for renewal_at", function()
    local null = core.json_null
    local text = cli.status_row_text({ names = { "a.example" }, managed = true, renewal_due = false,
      last_error = "no certificate in storage" }, NOW)
    local d = core.json_decode(text)
    assert.equal(null, d.issuer)
    assert.equal(null, d.not_after)
    assert.equal(null, d.ocsp)
    assert.equal(null, d.renewal_at)
    assert.equal(null, d.time_left)
    assert.equal(0, d.attempts)
    local never = core.json_decode(cli.status_row_text({ names = { "a.example" }, managed = true,
      not_after = NOW + 10, not_before = NOW, renewal_at = math.huge }, NOW))
    assert.equal(null, never.renewal_at)
  end)

  it("writes the deploy field: null without on_renewed, one object per target as the encoder would", function()
    local null = core.json_null
    local base = { names = { "a.example" }, managed = true, serial = "0a", not_before = NOW, not_after = NOW + 60,
      renewal_at = NOW + 30, renewal_due = false }
    assert.equal(null, core.json_decode(cli.status_row_text(base, NOW)).deploy)
    local row = {}
    for k, v in pairs(base) do row[k] = v end
    row.deploy = {
      { target = "files:/etc/nginx/certs", state = "failed", serial = "09", deployed_at = NOW - 3600, host = "web1",
        error = 'deploy: mkdir "x": Permission denied', attempts = 2, next_attempt = NOW + 120 },
      { target = "on_renewed", state = "unknown" },
    }
    expect(row, {
      names = { "a.example" }, managed = true, serial = "0a", not_before = "2026-01-01T00:00:00Z",
      not_after = "2026-01-01T00:01:00Z", renewal_at = "2026-01-01T00:00:30Z", renewal_due = false,
      attempts = 0, last_error = null, next_attempt = null, issuer = null, ocsp = null, time_left = 60,
      deploy = {
        { target = "files:/etc/nginx/certs", state = "failed", serial = "09", deployed_at = "2025-12-31T23:00:00Z",
          host = "web1", error = 'deploy: mkdir "x": Permission denied', attempts = 2,
          next_attempt = "2026-01-01T00:02:00Z" },
        { target = "on_renewed", state = "unknown", serial = null, deployed_at = null, host = null, error = null,
          attempts = 0, next_attempt = null },
      },
    })
  end)

  it("escapes quotes, control characters and non-ASCII text in every string", function()
    local err = 'CA said "no"\n\tretry later \\ \u{00e9}t\u{00e9}'
    local r = { names = { "xn--bcher-kva.example" }, managed = true, issuer = 'CN="odd", O=caf\u{00e9}',
      serial = "00", last_error = err, renewal_due = true, attempts = 1 }
    local d = core.json_decode(cli.status_row_text(r, NOW))
    assert.equal(err, d.last_error)
    assert.equal('CN="odd", O=caf\u{00e9}', d.issuer)
    assert.is_true(d.renewal_due)
  end)
end)
