-- Must-Staple (issue 9, item 8): a certificate with the TLS Feature extension
-- (status_request) and no valid staple is an error-level event after each
-- OCSP pass; status flags such certificates and --check counts one without a
-- valid staple as needing attention.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local cli = require "certmaint.cli"
local helpers = require "helpers.policies"

local OCSP_URL = "http://127.0.0.1:1/ocsp"
local DAY = 86400

describe("Must-Staple", function()
  local clock, ca, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
  end)

  after_each(testing.reset)

  local function engine(o)
    o = o or {}
    return testing.engine(certmaint.policy {
      certificates = { "a.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = OCSP_URL, must_staple = o.must_staple ~= false },
      ocsp = o.ocsp,
    }, { clock = clock, start = o.start })
  end

  local function lines(event)
    local out = {}
    for _, l in ipairs(logs()) do
      if l:find("event=" .. event .. " ", 1, true) or l:sub(-#event - 6) == "event=" .. event then
        out[#out + 1] = l
      end
    end
    return out
  end

  local function row(e)
    return e:status_rows(clock:now())[1]
  end

  it("a stapled must-staple certificate is counted and quiet", function()
    local e = engine()
    assert.is_true(e:cert("a.test").must_staple)
    local tick = e:tick("ocsp")
    assert.equal(1, tick.must_staple)
    assert.equal(0, tick.must_staple_unstapled)
    assert.equal(0, #lines("must_staple_unstapled"))
    assert.is_true(row(e).must_staple)
    assert.same({}, e:attention(row(e), clock:now()))
  end)

  it("one the responder cannot staple is an error naming it, and needs attention", function()
    local e = engine { start = false }
    e.responder:fail(true, "error")
    e:start()
    local unstapled = lines("must_staple_unstapled")
    assert.equal(1, #unstapled)
    assert.matches("level=error", unstapled[1], 1, true)
    assert.matches("name=a.test", unstapled[1], 1, true)
    assert.matches("no staple", unstapled[1], 1, true)
    local tick = e:tick("ocsp")
    assert.equal(1, tick.must_staple_unstapled)
    local health = e:health(clock:now())
    assert.equal(1, #health.attention)
    assert.matches("must-staple with no staple", health.attention[1].reasons[1], 1, true)
    local line, code = cli.check_summary(health)
    assert.equal(1, code)
    assert.matches("a.test must-staple with no staple", line, 1, true)
  end)

  it("a staple past its nextUpdate (the responder down since) is an error again", function()
    local e = engine()
    e.responder:fail(true, "error")
    clock:advance(8 * DAY) -- the 7-day staple has passed its nextUpdate
    logs()
    local tick = e:tick("ocsp")
    assert.equal(1, tick.must_staple_unstapled)
    assert.equal(1, #lines("must_staple_unstapled"))
    assert.matches("must-staple with", e:attention(row(e), clock:now())[1] or "", 1, true)
  end)

  it("a staple that comes back ends it", function()
    local e = engine { start = false }
    e.responder:fail(true, "error")
    e:start()
    e.responder:fail(true, false)
    logs()
    local tick = e:tick("ocsp")
    assert.equal(0, tick.must_staple_unstapled)
    assert.equal(0, #lines("must_staple_unstapled"))
  end)

  it("a certificate without the extension is never flagged, stapled or not", function()
    local e = engine { must_staple = false, start = false }
    e.responder:fail(true, "error")
    e:start()
    assert.is_false(e:cert("a.test").must_staple)
    assert.equal(0, #lines("must_staple_unstapled"))
    assert.equal(0, e:tick("ocsp").must_staple)
    assert.is_false(row(e).must_staple)
    assert.same({}, e:attention(row(e), clock:now()))
  end)

  it("an unmanaged must-staple certificate from ocsp.staple_files is checked too", function()
    local dir = helpers.tmpdir()
    local issued = ca:issue { names = { "other.test" }, ocsp_url = OCSP_URL, must_staple = true }
    local path = dir .. "/other.pem"
    local f = assert(io.open(path, "w")) f:write(issued.cert_pem) f:close()
    local e = engine { start = false, must_staple = false, ocsp = { staple_files = { path } } }
    e.responder:fail(true, "error")
    e:start()
    local unstapled = lines("must_staple_unstapled")
    assert.equal(1, #unstapled)
    assert.matches("name=other.test", unstapled[1], 1, true)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("status --check in another process judges the stored staple, not an empty cache", function()
    local storage = testing.memory()
    local function one_shot()
      local e = testing.engine(certmaint.policy {
        certificates = { "a.test" },
        issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = OCSP_URL, must_staple = true },
      }, { clock = clock, storage = storage, start = false })
      local loop = require "certmaint.loop"
      local task = loop.spawn(function() e.engine:load_all { keys = false } return e.engine:health(clock:now()) end)
      loop.run_until_idle()
      assert.is_true(task.done and task.ok, tostring(task.error))
      return task.results[1], e
    end
    local daemon = testing.engine(certmaint.policy {
      certificates = { "a.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = OCSP_URL, must_staple = true },
    }, { clock = clock, storage = storage })
    assert.is_truthy(daemon:cert("a.test").ocsp, "the daemon stapled and stored it")
    local health = one_shot()
    assert.same({}, health.attention)
    -- past the stored staple's nextUpdate (no daemon refreshed it): needs attention
    clock:advance("8d")
    health = one_shot()
    assert.equal(1, #health.attention)
    assert.matches("must-staple with no staple", health.attention[1].reasons[1], 1, true)
  end)

  it("status text marks must-staple rows in the STAPLE column", function()
    local e = engine()
    local r = row(e)
    assert.equal("good until " .. cli.iso(r.ocsp.next_update) .. " (must-staple)", cli.staple_text(r))
    assert.equal("- (must-staple)", cli.staple_text { must_staple = true })
    assert.equal("-", cli.staple_text { must_staple = false })
  end)
end)
