local testing = require "certmaint.testing"
local core = require "certmaint.core"
local lfs = require "lfs"
local helpers = require "helpers.policies"

describe("policies/haproxy.lua", function()
  after_each(testing.reset)

  it("names its issuer on the first line", function()
    assert.matches("^%-%- issuer: ", helpers.read(helpers.ROOT .. "/policies/haproxy.lua"))
  end)

  it("writes one 0600 PEM per certificate, chain then key, wildcard names made safe", function()
    testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/haproxy.lua", { env = { CERTMAINT_HAPROXY_DIR = dir, CERTMAINT_RELOAD = "true" } }))
    local e = testing.engine(policy, { storage = testing.memory() })
    local pem = helpers.read(dir .. "/example.com.pem")
    assert.is_truthy(pem)
    assert.equal("rw-------", lfs.attributes(dir .. "/example.com.pem", "permissions"))
    local chain = e:cert("example.com").pem
    assert.equal(chain, pem:sub(1, #chain))
    assert.matches("PRIVATE KEY", pem:sub(#chain + 1))
    assert.is_true(core.key_matches(chain, pem:sub(#chain + 1)))
    assert.is_truthy(helpers.read(dir .. "/wildcard_.apps.example.com.pem"))
    os.execute("rm -rf " .. dir)
  end)
  it("writes each certificate's OCSP staple where the server reads it, reloading only when it changed", function()
    testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local marker = dir .. "/reloads"
    local script = assert(io.open(dir .. "/reload.sh", "w"))
    script:write("echo reloaded >> " .. marker .. "\n")
    script:close()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/haproxy.lua",
      { env = { CERTMAINT_HAPROXY_DIR = dir .. "/certs", CERTMAINT_RELOAD = "sh " .. dir .. "/reload.sh" } }))
    local e = testing.engine(policy, { storage = testing.memory() })
    local function reloads() return select(2, (helpers.read(marker) or ""):gsub("reloaded", "")) end
    local before = reloads()
    local c = e:cert("example.com")
    local now = core.now()
    local function staple(der)
      assert.is_true(e.engine.cache:set(c.id, { ocsp = { status = "good", this_update = now,
        next_update = now + 86400, der = der } }))
      local task = require("certmaint.loop").spawn(e.engine.deploy_staple, e.engine, c.id, der)
      e:wait()
      assert.is_true(task.done and task.ok, tostring(task.error))
    end
    staple("DER-1")
    assert.equal("DER-1", helpers.read(dir .. "/certs/example.com.pem.ocsp"))
    assert.equal(before + 1, reloads())
    staple("DER-1")
    assert.equal(before + 1, reloads())
    staple("DER-2")
    assert.equal("DER-2", helpers.read(dir .. "/certs/example.com.pem.ocsp"))
    assert.equal(before + 2, reloads())
    os.execute("rm -rf " .. dir)
  end)
end)
