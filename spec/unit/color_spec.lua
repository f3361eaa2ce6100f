-- When status colours (certmaint.color) and what it colours
-- (engine/attention.lua's cell_levels over status rows).
local color = require "certmaint.color"
local attention = require "certmaint.engine.attention"
local core = require "certmaint.core"

describe("color.wanted", function()
  it("auto: a terminal only, and only without a non-empty NO_COLOR", function()
    assert.is_true(color.wanted("auto", nil, true))
    assert.is_true(color.wanted("auto", "", true)) -- no-color.org: set *and not empty*
    assert.is_false(color.wanted("auto", "1", true))
    assert.is_false(color.wanted("auto", nil, false))
  end)

  it("always and never decide alone (a command-line choice wins over NO_COLOR)", function()
    assert.is_true(color.wanted("always", "1", false))
    assert.is_false(color.wanted("never", nil, true))
  end)

  it("refuses an unknown mode", function()
    assert.error_matches(function() color.wanted("sometimes", nil, true) end, "auto, always or never")
  end)
end)

describe("color.parse_option", function()
  it("reads --color and --color=WHEN, and nothing else", function()
    assert.equal("always", color.parse_option("--color"))
    assert.equal("never", color.parse_option("--color=never"))
    assert.equal("auto", color.parse_option("--color=auto"))
    assert.is_nil(color.parse_option("--json"))
    local ok, err = color.parse_option("--color=red")
    assert.is_false(ok)
    assert.matches("got 'red'", err)
  end)
end)

describe("color.paint", function()
  it("wraps text in SGR red or yellow and a reset; no level leaves it", function()
    assert.equal("\27[31mx\27[0m", color.paint("x", "red"))
    assert.equal("\27[33mx\27[0m", color.paint("x", "yellow"))
    assert.equal("x", color.paint("x", nil))
    assert.error_matches(function() color.paint("x", "blue") end, "unknown level")
  end)
end)

describe("attention.cell_levels", function()
  local NOW = 1767225600
  local DAY = 86400
  local engine = setmetatable({ policy = { renew_check_interval = 600 } }, { __index = attention })
  local function row(o)
    local r = { names = { "a.test" }, not_before = NOW - 60 * DAY, not_after = NOW + 30 * DAY,
      renewal_at = NOW + 20 * DAY, renewal_due = false }
    for k, v in pairs(o or {}) do r[k] = v end
    return r
  end

  it("leaves a healthy row as it is", function()
    assert.same({}, engine:cell_levels(row(), NOW))
  end)

  it("red: missing, expired, overdue, failing, failed deploy, revoked staple", function()
    assert.same({ names = "red", renew = "red", error = "red" },
      engine:cell_levels({ names = { "a.test" }, renewal_due = false }, NOW))
    assert.same({ names = "red", left = "red" }, engine:cell_levels(row { not_after = NOW - 1 }, NOW))
    assert.same({ names = "red", renew = "red" },
      engine:cell_levels(row { renewal_at = NOW - DAY, renewal_due = true }, NOW))
    assert.same({ names = "red", error = "red" }, engine:cell_levels(row { last_error = "boom" }, NOW))
    assert.same({ names = "red", deployed = "red" },
      engine:cell_levels(row { deploy = { { target = "on_renewed", state = "failed", error = "x" } } }, NOW))
    assert.same({ names = "red", staple = "red" },
      engine:cell_levels(row { ocsp = { status = "revoked", this_update = NOW - 60, next_update = NOW + DAY } }, NOW))
  end)

  it("yellow: due now, inside the expiry guard, an outdated deploy; red wins", function()
    assert.same({ names = "yellow", renew = "yellow" },
      engine:cell_levels(row { renewal_at = NOW - 60, renewal_due = true }, NOW))
    -- a minute left: inside the guard (at least 5 renew checks) whatever the lifetime
    assert.is_true(core.renewal_guard(NOW - 60 * DAY, NOW + 60, 600) > 60)
    assert.same({ names = "yellow", left = "yellow" },
      engine:cell_levels(row { not_after = NOW + 60, renewal_at = NOW - 60, renewal_due = true }, NOW))
    assert.same({ names = "yellow", deployed = "yellow" },
      engine:cell_levels(row { deploy = { { target = "files:/x", state = "outdated", serial = "01" } } }, NOW))
    assert.same({ names = "red", renew = "yellow", error = "red" },
      engine:cell_levels(row { renewal_at = NOW - 60, renewal_due = true, last_error = "boom" }, NOW))
  end)

  it("gives --check the same reasons as before (a due renewal is no reason)", function()
    assert.same({}, engine:attention(row { renewal_at = NOW - 60, renewal_due = true }, NOW))
    assert.same({ "last error: boom" }, engine:attention(row { last_error = "boom" }, NOW))
  end)
end)
