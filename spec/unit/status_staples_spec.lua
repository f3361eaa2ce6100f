-- One-shot `status` runs no OCSP pass: its rows (text and --json) show the
-- staple storage holds for each certificate, as a server would staple it,
-- and not a stale one.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local OCSP_URL = "http://127.0.0.1:1/ocsp"

describe("status shows stored staples", function()
  local clock, ca, storage

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    storage = testing.memory()
    testing.capture_logs()
  end)

  after_each(testing.reset)

  local function policy()
    return certmaint.policy {
      certificates = { "a.test", "b.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = OCSP_URL },
    }
  end

  -- What `certmaint status` does in its own process: load, attach, rows.
  local function one_shot(fn)
    local e = testing.engine(policy(), { clock = clock, storage = storage, start = false })
    local task = loop.spawn(function()
      e.engine:load_all { keys = false }
      local n = e.engine:attach_stored_staples(clock:now())
      return n, fn(e.engine)
    end)
    loop.run_until_idle()
    assert.is_true(task.done and task.ok, tostring(task.error))
    return table.unpack(task.results)
  end

  it("the rows and --json carry the staple the daemon stored", function()
    local daemon = testing.engine(policy(), { clock = clock, storage = storage })
    local staple = daemon:cert("a.test").ocsp
    assert.is_truthy(staple)
    local n, rows = one_shot(function(e) return e:status_rows(clock:now()) end)
    assert.equal(2, n)
    assert.same({ status = "good", this_update = staple.this_update, next_update = staple.next_update }, rows[1].ocsp)
    local path = os.tmpname()
    local _, ok = one_shot(function(e)
      local f = assert(io.open(path, "w"))
      local r = e:status_json(clock:now(), f)
      f:close()
      return r
    end)
    assert.is_true(ok)
    local f = assert(io.open(path)) local text = f:read("a") f:close()
    os.remove(path)
    local json = core.json_decode(text)
    assert.equal("good", json[1].ocsp.status)
    assert.equal(require("certmaint.rfc3339").iso(staple.next_update), json[1].ocsp.next_update)
  end)

  it("a stored staple past its nextUpdate is not shown", function()
    testing.engine(policy(), { clock = clock, storage = storage })
    clock:advance("8d")
    local n, rows = one_shot(function(e) return e:status_rows(clock:now()) end)
    assert.equal(0, n)
    assert.is_nil(rows[1].ocsp)
  end)

  it("nothing stored, nothing shown", function()
    local daemon = testing.engine(policy(), { clock = clock, storage = storage, start = false })
    daemon.responder:fail(true, "error")
    daemon:start()
    local n, rows = one_shot(function(e) return e:status_rows(clock:now()) end)
    assert.equal(0, n)
    assert.is_nil(rows[1].ocsp)
  end)
end)
