-- The OCSP pass with the memo of checked signatures (ocsp.verified_memo,
-- engine/ocsp.lua): fetched staples are added at the end of a pass, a
-- restart on the same storage finds their signatures there, a tampered
-- stored staple is still refused, and false turns it off.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local lfs = require "lfs"

local URL = "http://ocsp.ca.test/"

describe("OCSP pass with ocsp.verified_memo", function()
  local clock, ca, dir, path

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
    dir = os.tmpname()
    os.remove(dir)
    path = dir .. "/memo/host.ocsp-verified" -- its folder is made
  end)

  after_each(function()
    testing.reset()
    os.remove(path)
    lfs.rmdir(dir .. "/memo")
    lfs.rmdir(dir)
  end)

  local function engine(storage, memo)
    return testing.engine(certmaint.policy {
      certificates = { "a.test", "b.test" },
      issuer = testing.issuer { ca = ca, ocsp_url = URL },
      ocsp = { verified_memo = memo },
    }, { storage = storage })
  end

  local function size(p) return lfs.attributes(p, "size") end

  it("records fetched staples, and a restart's stored staples hit it", function()
    local storage = require("certmaint.storage.memory").new()
    local e1 = engine(storage, path)
    assert.equal("good", e1:cert("a.test").ocsp.status)
    local st1 = e1.engine.ocsp_memo:stats()
    assert.equal(2, st1.added) -- the two fetched staples
    assert.equal(#"certmaint ocsp-verified 1\n" + 2 * 32, size(path))
    assert.equal("rw-------", lfs.attributes(path, "permissions"))

    local e2 = engine(storage, path)
    assert.equal("good", e2:cert("b.test").ocsp.status)
    local st2 = e2.engine.ocsp_memo:stats()
    assert.equal(2, st2.hits)
    assert.equal(0, st2.added)
  end)

  it("a stored staple changed in storage is refused, memo or not", function()
    local storage = require("certmaint.storage.memory").new()
    local e1 = engine(storage, path)
    local c = e1:cert("a.test")
    local key = require("certmaint.keys").ocsp("a.test", require("certmaint.keys").fast_hash(c.pem))
    local der = assert(storage:load(key))
    -- the signature's last byte changed: another signature, not in the memo
    local tampered = der:sub(1, -2) .. string.char((der:byte(-1) + 1) % 256)
    assert(storage:store(key, tampered))
    local e2 = engine(storage, path)
    local st = e2.engine.ocsp_memo:stats()
    assert.equal(1, st.hits) -- b.test's
    -- a.test's tampered staple was not taken: a fresh one was fetched (and stored), its signature new
    local a = e2:cert("a.test")
    assert.equal("good", a.ocsp.status)
    assert.are_not.equal(tampered, a.ocsp.der)
    assert.equal(a.ocsp.der, storage:load(key))
    assert.equal(1, st.added)
  end)

  it("false turns it off; an unusable path is a warning and the pass goes on", function()
    local e = engine(require("certmaint.storage.memory").new(), false)
    assert.equal("good", e:cert("a.test").ocsp.status)
    assert.is_false(e.engine.ocsp_memo)
    assert.is_nil(lfs.attributes(path))

    -- a folder where the file should be: cannot be read
    assert(lfs.mkdir(dir))
    local logs = testing.capture_logs()
    e = engine(require("certmaint.storage.memory").new(), dir)
    assert.equal("good", e:cert("a.test").ocsp.status)
    assert.is_false(e.engine.ocsp_memo)
    assert.matches("event=ocsp_memo_unusable .*code=EISDIR", table.concat(logs(), "\n"))
  end)
end)
