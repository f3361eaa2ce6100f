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
end)
