-- ocsp.staple_files (issue 9, item 2): certificates certmaint does not manage,
-- stapled only. Each is cached unmanaged, the OCSP pass staples it, and the
-- staple goes beside its file as <path>.ocsp (DER), only when it changed.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local helpers = require "helpers.policies"
local lfs = require "lfs"

local OCSP_URL = "http://127.0.0.1:1/ocsp"

describe("ocsp.staple_files", function()
  local dir, clock, ca, logs

  before_each(function()
    dir = helpers.tmpdir()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function write(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
  end

  -- A chain file of a server certmaint does not manage (leaf, then the CA).
  local function chain_file(name, o)
    local issued = ca:issue { names = { name }, ocsp_url = OCSP_URL, not_after = o and o.not_after }
    local path = dir .. "/" .. name .. ".pem"
    write(path, issued.cert_pem)
    return path, issued
  end

  local function engine(files, o)
    return testing.engine(certmaint.policy {
      certificates = (o and o.certificates) or { "managed.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = OCSP_URL },
      ocsp = { staple_files = files },
    }, { clock = clock, start = o and o.start })
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

  it("caches each file unmanaged, staples it, and writes <path>.ocsp beside it", function()
    local path, issued = chain_file("other.test")
    local e = engine { path }
    local id = e.engine.cache:lookup("other.test")
    assert.is_truthy(id)
    local c = e.engine.cache:get(id)
    assert.is_false(c.managed)
    assert.equal(issued.serial, c.serial)
    assert.is_truthy(c.ocsp, "the OCSP pass stapled it")
    assert.equal("good", c.ocsp.status)
    assert.equal(c.ocsp.der, helpers.read(path .. ".ocsp"))
    assert.equal("rw-r--r--", lfs.attributes(path .. ".ocsp", "permissions"))
    -- the managed certificate is not written beside any staple file
    assert.is_nil(lfs.attributes(dir .. "/managed.test.pem.ocsp"))
  end)

  it("writes the staple file only when its bytes changed", function()
    local path = chain_file("other.test")
    local e = engine { path }
    local id = e.engine.cache:lookup("other.test")
    local der = e.engine.cache:get(id).ocsp.der
    local ino = lfs.attributes(path .. ".ocsp", "ino")
    assert.is_false(e:write_staple_file(id, der))
    assert.equal(ino, lfs.attributes(path .. ".ocsp", "ino"))
    -- past the staple's refresh time the pass fetches a newer one: written
    clock:advance("4d")
    e:tick("ocsp")
    local newer = e.engine.cache:get(id).ocsp.der
    assert.are_not.equal(der, newer)
    assert.equal(newer, helpers.read(path .. ".ocsp"))
    assert.are_not.equal(ino, lfs.attributes(path .. ".ocsp", "ino"))
  end)

  it("removes <path>.ocsp when the certificate has no staple any more", function()
    local path = chain_file("other.test")
    local e = engine { path }
    local id = e.engine.cache:lookup("other.test")
    assert.is_truthy(lfs.attributes(path .. ".ocsp"))
    assert.is_true(e:deploy_staple(id, nil))
    assert.is_nil(lfs.attributes(path .. ".ocsp"))
    assert.is_false(e:deploy_staple(id, nil))
    assert.equal(1, #lines("staple_file_removed"))
  end)

  it("a staple file left beside a replaced certificate is removed at load, before any pass", function()
    local path, issued = chain_file("other.test")
    local old_staple = ca:ocsp(issued.cert_pem)
    write(path .. ".ocsp", old_staple)
    local renewed = ca:issue { names = { "other.test" }, ocsp_url = OCSP_URL }
    write(path, renewed.cert_pem)
    local e = engine({ path }, { start = false })
    e.responder:fail(true, "error") -- no pass writes a new one
    e:start()
    assert.is_nil(lfs.attributes(path .. ".ocsp"))
    assert.matches("not a valid staple", lines("staple_file_removed")[1] or "", 1, true)
  end)

  it("a valid staple file beside its certificate is kept at load", function()
    local path, issued = chain_file("other.test")
    local staple = ca:ocsp(issued.cert_pem)
    write(path .. ".ocsp", staple)
    local e = engine({ path }, { start = false })
    e.responder:fail(true, "error")
    e:start()
    assert.equal(staple, helpers.read(path .. ".ocsp"))
  end)

  it("two files holding one certificate both get the staple; dropping one keeps the other", function()
    local path, issued = chain_file("other.test")
    local copy = dir .. "/copy.pem"
    write(copy, issued.cert_pem)
    local e = engine { path, copy }
    local id = e.engine.cache:lookup("other.test")
    local der = e.engine.cache:get(id).ocsp.der
    assert.equal(der, helpers.read(path .. ".ocsp"))
    assert.equal(der, helpers.read(copy .. ".ocsp"))
    e.engine.policy.ocsp.staple_files = { copy }
    e:load_staple_files()
    assert.is_truthy(e.engine.cache:get(id), "still stapled for the file that stays")
    assert.is_false(e:write_staple_file(id, der))
  end)

  it("a missing or unparseable file is an error naming it; the others are stapled", function()
    local good = chain_file("other.test")
    local junk = dir .. "/junk.pem"
    write(junk, "not a certificate\n")
    local missing = dir .. "/missing.pem"
    local e = engine { missing, junk, good }
    local failed = lines("staple_file_failed")
    assert.equal(2, #failed)
    assert.matches("level=error", failed[1], 1, true)
    assert.matches(missing, failed[1], 1, true)
    assert.matches(junk, failed[2], 1, true)
    assert.is_truthy(helpers.read(good .. ".ocsp"))
    assert.is_truthy(e:cert("managed.test"), "the engine runs on")
  end)

  it("a reload takes a replaced certificate and forgets a file dropped from the list", function()
    local a = chain_file("a.other.test")
    local b = chain_file("b.other.test")
    local e = engine({ a, b })
    local old_a = e.engine.cache:lookup("a.other.test")
    assert.is_truthy(e.engine.cache:lookup("b.other.test"))
    -- another tool renewed a's certificate; b is no longer stapled by us
    local renewed = ca:issue { names = { "a.other.test" }, ocsp_url = OCSP_URL }
    write(a, renewed.cert_pem)
    e.engine.policy.ocsp.staple_files = { a }
    assert.same({ 1, 0 }, { e:load_staple_files() })
    local new_a = e.engine.cache:lookup("a.other.test")
    assert.are_not.equal(old_a, new_a)
    assert.is_nil(e.engine.cache:get(old_a))
    assert.equal(renewed.serial, e.engine.cache:get(new_a).serial)
    assert.is_nil(e.engine.cache:lookup("b.other.test"))
    -- the new certificate's staple replaces the old one beside the file
    e:tick("ocsp")
    assert.equal(e.engine.cache:get(new_a).ocsp.der, helpers.read(a .. ".ocsp"))
  end)

  it("a file holding a certificate the policy manages leaves it managed", function()
    local e = engine({}, {})
    local c = e:cert("managed.test")
    local path = dir .. "/managed.pem"
    write(path, c.pem)
    e.engine.policy.ocsp.staple_files = { path }
    assert.same({ 1, 0 }, { e:load_staple_files() })
    assert.is_true(e.engine.cache:get(c.id).managed)
    e.engine.policy.ocsp.staple_files = {}
    e:load_staple_files()
    assert.is_truthy(e.engine.cache:get(c.id), "dropping the file does not drop the managed certificate")
  end)
end)
