-- Staple output (issue 9, item 6): deploy.files puts the certificate's OCSP
-- staple (DER) where HAProxy or nginx reads it, atomically, reloading only
-- when the bytes changed, and never leaves the previous certificate's staple
-- beside a new certificate.
local certmaint = require "certmaint"
local deploy = require "certmaint.deploy"
local testing = require "certmaint.testing"
local loop = require "certmaint.loop"
local helpers = require "helpers.policies"
local lfs = require "lfs"

local function cert(name, n, der)
  n = n or 1
  return { names = { name }, pem = "CHAIN " .. n .. "\n", key_pem = "KEY " .. n .. "\n",
    ocsp = der and { status = "good", der = der } or nil }
end

local function in_task(fn, ...)
  local task = loop.spawn(fn, ...)
  loop.run_until_idle()
  assert.is_true(task.done)
  if task.ok then return true, table.unpack(task.results or {}) end
  return false, task.error
end

local function reloads(file)
  local data = helpers.read(file)
  return data and select(2, data:gsub("x", "")) or 0
end

describe("deploy.files staples", function()
  local dir, count, logs

  before_each(function()
    dir = helpers.tmpdir()
    count = dir .. "/reloads"
    logs = testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function files(o)
    o.dir = o.dir or dir .. "/certs"
    o.reload = o.reload or { "sh", "-c", "echo x >> " .. count }
    local fn = o.fn or deploy.files(o)
    return fn, deploy.target_of(fn)
  end

  local function logged(event)
    local n = 0
    for _, line in ipairs(logs()) do
      if line:find("event=" .. event, 1, true) then n = n + 1 end
    end
    return n
  end

  it("haproxy layout: <dir>/<name>.pem.ocsp beside the PEM, DER as given, 0644", function()
    local d, t = files { layout = "haproxy" }
    assert.is_true((in_task(d, cert("a.test"))))
    assert.same({ true, "written" }, { in_task(t.deploy_staple, t, cert("a.test"), "\48\3\10\1\0STAPLE1") })
    assert.equal("\48\3\10\1\0STAPLE1", helpers.read(dir .. "/certs/a.test.pem.ocsp"))
    assert.equal("rw-r--r--", lfs.attributes(dir .. "/certs/a.test.pem.ocsp", "permissions"))
    assert.equal(dir .. "/certs/a.test.pem.ocsp", t:staple_path(cert("a.test")))
    assert.equal(2, reloads(count)) -- the deploy, then the staple
  end)

  it("split layout: <dir>/<name>/ocsp.der (nginx ssl_stapling_file), wildcards named wildcard_", function()
    local d, t = files {}
    in_task(d, cert("*.a.test"))
    assert.same({ true, "written" }, { in_task(t.deploy_staple, t, cert("*.a.test"), "DER1") })
    assert.equal("DER1", helpers.read(dir .. "/certs/wildcard_.a.test/ocsp.der"))
  end)

  it("reloads only when the bytes changed, and replaces the file by rename", function()
    local d, t = files { layout = "haproxy" }
    in_task(d, cert("a.test"))
    local path = dir .. "/certs/a.test.pem.ocsp"
    in_task(t.deploy_staple, t, cert("a.test"), "DER1")
    local ino = lfs.attributes(path, "ino")
    assert.same({ true, "unchanged" }, { in_task(t.deploy_staple, t, cert("a.test"), "DER1") })
    assert.equal(2, reloads(count))
    assert.equal(ino, lfs.attributes(path, "ino"))
    assert.same({ true, "written" }, { in_task(t.deploy_staple, t, cert("a.test"), "DER2") })
    assert.equal(3, reloads(count))
    assert.equal("DER2", helpers.read(path))
    assert.are_not.equal(ino, lfs.attributes(path, "ino"))
    assert.equal(2, logged("staple_deployed"))
  end)

  it("a new certificate's deploy removes the previous certificate's staple", function()
    local d, t = files { layout = "haproxy" }
    in_task(d, cert("a.test", 1))
    in_task(t.deploy_staple, t, cert("a.test", 1), "OLD")
    assert.is_true((in_task(d, cert("a.test", 2))))
    assert.is_nil(lfs.attributes(dir .. "/certs/a.test.pem.ocsp"))
    assert.equal("CHAIN 2\nKEY 2\n", helpers.read(dir .. "/certs/a.test.pem"))
    assert.equal(1, logged("staple_removed"))
  end)

  it("a certificate deployed with a staple of its own gets that staple at once", function()
    local d = files {}
    in_task(d, cert("a.test", 1, "OLD"))
    assert.equal("OLD", helpers.read(dir .. "/certs/a.test/ocsp.der"))
    in_task(d, cert("a.test", 2, "NEW"))
    assert.equal("NEW", helpers.read(dir .. "/certs/a.test/ocsp.der"))
    assert.equal(2, reloads(count)) -- one reload a deploy, staple included
  end)

  it("never writes a staple beside another certificate than the one it is for", function()
    local d, t = files { layout = "haproxy" }
    in_task(d, cert("a.test", 1))
    assert.same({ true, "not_deployed" }, { in_task(t.deploy_staple, t, cert("a.test", 2), "DER2") })
    assert.is_nil(lfs.attributes(dir .. "/certs/a.test.pem.ocsp"))
    assert.same({ true, "not_deployed" }, { in_task(t.deploy_staple, t, cert("b.test", 1), "DER") })
    assert.is_nil(lfs.attributes(dir .. "/certs/b.test.pem.ocsp"))
    assert.equal(1, reloads(count))
  end)

  it("a staple gone (nil) removes the file and reloads; nothing there is unchanged", function()
    local d, t = files {}
    in_task(d, cert("a.test"))
    in_task(t.deploy_staple, t, cert("a.test"), "DER")
    assert.same({ true, "removed" }, { in_task(t.deploy_staple, t, cert("a.test"), nil) })
    assert.is_nil(lfs.attributes(dir .. "/certs/a.test/ocsp.der"))
    assert.equal(3, reloads(count))
    assert.same({ true, "unchanged" }, { in_task(t.deploy_staple, t, cert("a.test"), nil) })
    assert.equal(3, reloads(count))
  end)

  it("staple = false writes and removes no staple file", function()
    local d, t = files { layout = "haproxy", staple = false }
    in_task(d, cert("a.test", 1, "DER"))
    assert.is_nil(t:staple_path(cert("a.test")))
    assert.same({ true, "disabled" }, { in_task(t.deploy_staple, t, cert("a.test", 1), "DER") })
    assert.is_nil(lfs.attributes(dir .. "/certs/a.test.pem.ocsp"))
    local f = assert(io.open(dir .. "/certs/a.test.pem.ocsp", "w"))
    f:write("operator's own") f:close()
    in_task(d, cert("a.test", 2))
    assert.equal("operator's own", helpers.read(dir .. "/certs/a.test.pem.ocsp"))
  end)

  it("raises when the staple cannot be written, and leaves no temp file", function()
    local d, t = files {}
    in_task(d, cert("a.test"))
    os.execute("mkdir '" .. dir .. "/certs/a.test/ocsp.der'") -- a directory where the file goes
    local ok, err = in_task(t.deploy_staple, t, cert("a.test"), "DER")
    assert.is_false(ok)
    assert.matches("^deploy: ", err)
    for f in lfs.dir(dir .. "/certs/a.test") do assert.is_nil(f:find("tmp", 1, true), f) end
  end)

  it("rejects a staple option that is not a boolean", function()
    assert.error_matches(function() deploy.files { dir = dir, staple = "yes" } end, "staple", 1, true)
  end)
end)

describe("Engine:deploy_staple", function()
  local dir, clock, ca, count

  before_each(function()
    dir = helpers.tmpdir()
    count = dir .. "/reloads"
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function engine(layout, on_renewed)
    return testing.engine(certmaint.policy {
      certificates = { "a.test", "b.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d" }, -- no OCSP URL: the specs staple by hand
      on_renewed = on_renewed or certmaint.deploy.files { dir = dir, layout = layout,
        reload = { "sh", "-c", "echo x >> " .. count } },
    }, { clock = clock })
  end

  local function staple(e, name, o)
    local c = e:cert(name)
    local der = ca:ocsp(c.pem, o)
    assert.is_true(e.engine.cache:set(c.id, { ocsp = { status = "good", this_update = clock:now(),
      next_update = clock:now() + 7 * 86400, der = der } }))
    return c.id, der
  end

  local function deploy_staple(e, id, der)
    local ok, res = in_task(e.engine.deploy_staple, e.engine, id, der)
    assert.is_true(ok, tostring(res))
    return res
  end

  it("writes the staple to the policy's files target in the caller's task, then reloads", function()
    local e = engine("haproxy")
    local before = reloads(count)
    assert.is_true(before > 0) -- the certificates were deployed
    assert.is_nil(lfs.attributes(dir .. "/a.test.pem.ocsp"))
    local id, der = staple(e, "a.test")
    assert.is_true(deploy_staple(e, id, der))
    assert.equal(der, helpers.read(dir .. "/a.test.pem.ocsp"))
    assert.is_nil(lfs.attributes(dir .. "/b.test.pem.ocsp"))
    assert.equal(before + 1, reloads(count))
    assert.is_false(deploy_staple(e, id, der), "the same bytes: nothing written, no reload")
    assert.equal(before + 1, reloads(count))
  end)

  it("staples arriving at once from several tasks are all written, their reloads folded", function()
    local e = engine(nil)
    local before = reloads(count)
    local a, da = staple(e, "a.test")
    local b, db = staple(e, "b.test")
    local t1 = loop.spawn(e.engine.deploy_staple, e.engine, a, da)
    local t2 = loop.spawn(e.engine.deploy_staple, e.engine, b, db)
    loop.run_until_idle()
    assert.is_true(t1.done and t1.ok and t2.done and t2.ok)
    assert.equal(da, helpers.read(dir .. "/a.test/ocsp.der"))
    assert.equal(db, helpers.read(dir .. "/b.test/ocsp.der"))
    local n = reloads(count) - before
    assert.is_true(n >= 1 and n <= 2, "reloads: " .. n)
  end)

  it("a renewal's deploy removes the old certificate's staple file", function()
    local e = engine("haproxy")
    local id, der = staple(e, "a.test")
    deploy_staple(e, id, der)
    assert.is_truthy(lfs.attributes(dir .. "/a.test.pem.ocsp"))
    clock:advance("25d")
    e:tick("renew")
    assert.are_not.equal(id, e:cert("a.test").id)
    assert.is_nil(lfs.attributes(dir .. "/a.test.pem.ocsp"))
    -- the old certificate's staple arriving late is not written beside the new one
    assert.is_false(deploy_staple(e, id, der))
    assert.is_nil(lfs.attributes(dir .. "/a.test.pem.ocsp"))
  end)

  it("deploying a certificate again without its staple attached keeps its own valid staple file", function()
    local e = engine("haproxy")
    local c = e:cert("a.test")
    local t = deploy.target_of(e.engine.policy.on_renewed)
    local own = ca:ocsp(c.pem)
    local f = assert(io.open(dir .. "/a.test.pem.ocsp", "wb")) f:write(own) f:close()
    local view = setmetatable({ key_pem = helpers.read(dir .. "/a.test.pem"):sub(#c.pem + 1), ocsp = false },
      { __index = c })
    assert.is_true((in_task(t.deploy, t, view)))
    assert.equal(own, helpers.read(dir .. "/a.test.pem.ocsp"))
    -- but not a stale one, nor another certificate's
    local stale = ca:ocsp(c.pem, { this_update = clock:now() - 9 * 86400, next_update = clock:now() - 86400 })
    f = assert(io.open(dir .. "/a.test.pem.ocsp", "wb")) f:write(stale) f:close()
    in_task(t.deploy, t, view)
    assert.is_nil(lfs.attributes(dir .. "/a.test.pem.ocsp"))
    f = assert(io.open(dir .. "/a.test.pem.ocsp", "wb")) f:write(ca:ocsp(e:cert("b.test").pem)) f:close()
    in_task(t.deploy, t, view)
    assert.is_nil(lfs.attributes(dir .. "/a.test.pem.ocsp"))
  end)

  it("a target that cannot be written is logged, not raised", function()
    local logs = testing.capture_logs()
    local e = engine(nil)
    local id, der = staple(e, "a.test")
    os.execute("mkdir '" .. dir .. "/a.test/ocsp.der'")
    assert.is_false(deploy_staple(e, id, der))
    assert.matches("event=staple_deploy_failed", table.concat(logs(), "\n"), 1, true)
  end)

  it("the OCSP pass puts each verified staple beside its certificate, and a renewal's new one too", function()
    local e = testing.engine(certmaint.policy {
      certificates = { "a.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = "http://127.0.0.1:1/ocsp" },
      on_renewed = certmaint.deploy.files { dir = dir, layout = "haproxy" },
    }, { clock = clock })
    local c = e:cert("a.test")
    assert.is_truthy(c.ocsp, "the start-up OCSP pass stapled it")
    assert.equal(c.ocsp.der, helpers.read(dir .. "/a.test.pem.ocsp"))
    clock:advance("25d")
    e:tick("renew")
    assert.is_nil(lfs.attributes(dir .. "/a.test.pem.ocsp"), "the old staple left with the old certificate")
    e:tick("ocsp")
    local renewed = e:cert("a.test")
    assert.are_not.equal(c.id, renewed.id)
    assert.equal(renewed.ocsp.der, helpers.read(dir .. "/a.test.pem.ocsp"))
  end)

  it("a staple past its nextUpdate with the responder down leaves the server's file too", function()
    local e = testing.engine(certmaint.policy {
      certificates = { "a.test" },
      issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = "http://127.0.0.1:1/ocsp" },
      on_renewed = certmaint.deploy.files { dir = dir },
    }, { clock = clock })
    assert.is_truthy(lfs.attributes(dir .. "/a.test/ocsp.der"))
    e.responder:fail(true, "error")
    clock:advance("4d")
    e:tick("ocsp")
    assert.is_truthy(lfs.attributes(dir .. "/a.test/ocsp.der"), "kept while valid")
    clock:advance("4d") -- past the 7-day staple's nextUpdate
    e:tick("ocsp")
    assert.is_nil(e:cert("a.test").ocsp)
    assert.is_nil(lfs.attributes(dir .. "/a.test/ocsp.der"))
  end)

  it("does nothing without a files target (an on_renewed function of the policy's own)", function()
    local e = engine(nil, function() end)
    local id, der = staple(e, "a.test")
    assert.is_false(deploy_staple(e, id, der))
  end)
end)
