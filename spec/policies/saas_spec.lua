local testing = require "certmaint.testing"
local helpers = require "helpers.policies"

describe("policies/saas.lua", function()
  after_each(testing.reset)

  it("names its issuer on the first line", function()
    assert.matches("^%-%- issuer: ", helpers.read(helpers.ROOT .. "/policies/saas.lua"))
  end)

  it("manages the names in the domains file at run time, and drops removed ones", function()
    testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local file = dir .. "/domains.txt"
    local function write(s) local f = assert(io.open(file, "w")); f:write(s); f:close() end
    write("shop.customer1.test\n# a comment\nBLOG.customer2.test  \n")
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/saas.lua", { env = { CERTMAINT_DOMAINS = file } }))
    local e = testing.engine(policy, { storage = testing.memory() })
    assert.is_nil(e:cert("shop.customer1.test"))
    e:tick("renew")
    e:wait()
    assert.is_truthy(e:cert("shop.customer1.test"))
    assert.is_truthy(e:cert("blog.customer2.test"))
    assert.is_true(e:cert("blog.customer2.test").on_demand)
    write("shop.customer1.test\n")
    e:tick("renew")
    assert.is_truthy(e:cert("shop.customer1.test"))
    assert.is_nil(e:cert("blog.customer2.test"))
    assert.is_truthy(e:cert("app.example.com"))
    os.execute("rm -rf " .. dir)
  end)

  it("refuses names that are not in the file", function()
    testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/saas.lua", { env = { CERTMAINT_DOMAINS = dir .. "/missing.txt" } }))
    local e = testing.engine(policy, { storage = testing.memory() })
    local ok, err = e:manage("evil.test")
    assert.is_nil(ok)
    assert.matches("refused", err)
    assert.is_nil(e:cert("evil.test"))
  end)
end)
