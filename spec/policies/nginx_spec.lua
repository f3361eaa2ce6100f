local testing = require "certmaint.testing"
local core = require "certmaint.core"
local lfs = require "lfs"
local helpers = require "helpers.policies"

describe("policies/nginx.lua", function()
  after_each(testing.reset)

  it("names its issuer on the first line", function()
    assert.matches("^%-%- issuer: ", helpers.read(helpers.ROOT .. "/policies/nginx.lua"))
  end)

  it("deploys fullchain.pem and a 0600 privkey.pem, then runs the reload command", function()
    local clock = testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local marker = dir .. "/reloads"
    local script = assert(io.open(dir .. "/reload.sh", "w"))
    script:write("echo reloaded >> " .. marker .. "\n")
    script:close()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/nginx.lua", { env = { CERTMAINT_NGINX_DIR = dir, CERTMAINT_RELOAD = "sh " .. dir .. "/reload.sh" } }))
    local e = testing.engine(policy, { clock = clock, storage = testing.memory() })
    local chain = helpers.read(dir .. "/example.com/fullchain.pem")
    local key = helpers.read(dir .. "/example.com/privkey.pem")
    assert.is_truthy(chain)
    assert.is_true(core.key_matches(chain, key))
    assert.equal("rw-------", lfs.attributes(dir .. "/example.com/privkey.pem", "permissions"))
    assert.equal(e:cert("www.example.com").pem, chain)
    assert.is_truthy(helpers.read(dir .. "/api.example.com/fullchain.pem"))
    local reloads = select(2, helpers.read(marker):gsub("reloaded", ""))
    assert.is_true(reloads >= 1)
    -- a renewal deploys the new certificate
    clock:advance(25 * 86400)
    e:tick("renew")
    local chain2 = helpers.read(dir .. "/example.com/fullchain.pem")
    assert.not_equal(chain, chain2)
    assert.equal(e:cert("example.com").pem, chain2)
    os.execute("rm -rf " .. dir)
  end)

  it("reports a failing reload command through on_renewed's error, keeping the certificate", function()
    testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local policy = assert(testing.load_policy(helpers.ROOT .. "/policies/nginx.lua", { env = { CERTMAINT_NGINX_DIR = dir, CERTMAINT_RELOAD = "false" } }))
    local logs = testing.capture_logs()
    local e = testing.engine(policy, { storage = testing.memory() })
    assert.is_truthy(e:cert("example.com"))
    local text = table.concat(logs(), "\n")
    assert.matches("event=deploy_reload_failed", text)
    assert.matches("event=hook_failed.*hook=on_renewed", text)
    os.execute("rm -rf " .. dir)
  end)
end)
