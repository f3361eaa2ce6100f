-- policies/cluster-etcd.lua, offline: the settings it reads from the
-- environment and refuses, then three instances of it on one storage with
-- a memory storage in etcd's place and a testing issuer in the CA's (same
-- folder), as testing.engine's opts allow: one order per name, every
-- instance serving the same certificate, every node deploying its files.
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local helpers = require "helpers.policies"
local loop = require "certmaint.loop"

local PATH = helpers.ROOT .. "/policies/cluster-etcd.lua"
local DAY = 86400

describe("policies/cluster-etcd.lua", function()
  local clock, ca

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
  end)

  after_each(testing.reset)

  local function load(env)
    return testing.load_policy(PATH, { env = env or {} })
  end

  it("names its issuer on the first line", function()
    assert.matches("^%-%- issuer: ", helpers.read(PATH))
  end)

  it("builds etcd storage, ACME with distributed http-01 and the certificates from the environment", function()
    local p = assert(load {
      CERTMAINT_ETCD_ENDPOINTS = "http://10.0.0.1:2379, http://10.0.0.2:2379,http://10.0.0.3:2379",
      CERTMAINT_ETCD_PREFIX = "/lb-certs", CERTMAINT_LOCK_TTL = "20s", CERTMAINT_LOCK_WAIT = "2m",
      CERTMAINT_NAMES = "example.com www.example.com, api.example.com",
      CERTMAINT_ACME_DIRECTORY = "https://127.0.0.1:14000/dir", CERTMAINT_EMAIL = "ops@example.com",
      CERTMAINT_HTTP01_LISTEN = "127.0.0.1:5002", CERTMAINT_HTTP01_STANDBY = "1",
      CERTMAINT_RENEW_CHECK_INTERVAL = "15s",
      CERTMAINT_ETCD_CA_FILE = "/etc/etcd/ca.pem", CERTMAINT_ETCD_CERT_FILE = "/etc/etcd/node.pem",
      CERTMAINT_ETCD_KEY_FILE = "/etc/etcd/node.key",
    })
    assert.equal("/etc/etcd/ca.pem", p.storage.ca_file)
    assert.equal("/etc/etcd/node.pem", p.storage.cert_file)
    assert.equal("/etc/etcd/node.key", p.storage.key_file)
    assert.same({ "http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379" }, p.storage.endpoints)
    assert.equal("etcd:http://10.0.0.1:2379/lb-certs", p.storage:describe())
    assert.equal(20, p.storage.lock_ttl)
    assert.equal(120, p.lock_wait)
    assert.equal(15, p.renew_check_interval)
    assert.equal(2, #p.certificates)
    assert.same({ "example.com", "www.example.com" }, p.certificates[1].names)
    assert.same({ "api.example.com" }, p.certificates[2].names)
    assert.equal("127.0.0.1-14000-dir", p.issuer:storage_key())
    local h = p.issuer.challenges.http01
    assert.equal("127.0.0.1:5002", h.listen)
    assert.is_true(h.standby)
    assert.is_true(h.distributed)
    assert.is_nil(p.on_renewed) -- no deploy directory given: nothing written outside etcd
  end)

  it("has working defaults: local etcd, Let's Encrypt, port 80 opened while a challenge is pending", function()
    local p = assert(load())
    assert.same({ "http://127.0.0.1:2379" }, p.storage.endpoints)
    assert.equal(30, p.storage.lock_ttl)
    assert.equal(300, p.lock_wait)
    assert.equal(600, p.renew_check_interval)
    assert.equal("acme-v02.api.letsencrypt.org-directory", p.issuer:storage_key())
    assert.equal("0.0.0.0:80", p.issuer.challenges.http01.listen)
    assert.is_false(p.issuer.challenges.http01.standby)
  end)

  it("refuses wrong settings with the policy's line and what is wrong", function()
    local _, err = load { CERTMAINT_ETCD_ENDPOINTS = "127.0.0.1:2379" }
    assert.matches("cluster%-etcd%.lua:%d+: storage%.etcd: option \"endpoints\" entry 1 must be a URL", err)
    _, err = load { CERTMAINT_ETCD_USERNAME = "root" }
    assert.matches("cluster%-etcd%.lua:%d+: storage%.etcd: username and password go together", err)
    _, err = load { CERTMAINT_ETCD_KEY_FILE = "/etc/etcd/node.key" }
    assert.matches("cluster%-etcd%.lua:%d+: storage%.etcd: key_file needs cert_file", err)
    _, err = load { CERTMAINT_LOCK_WAIT = "a while" }
    assert.matches("cluster%-etcd%.lua:%d+: policy field \"lock_wait\": bad duration \"a while\"", err)
    _, err = load { CERTMAINT_HTTP01_LISTEN = "port 80" }
    assert.matches("cluster%-etcd%.lua:%d+: .*listen.*ADDRESS:PORT", err)
    _, err = load { CERTMAINT_NAMES = "bad..name" }
    assert.matches("cluster%-etcd%.lua:%d+: .*bad%.%.name", err)
  end)

  it("runs as three instances on one storage: each name obtained once, renewed once, deployed on every node", function()
    local dir = helpers.tmpdir()
    local shared = testing.memory()
    local nodes, issuers = {}, {}
    for i = 1, 3 do
      local p = assert(load { CERTMAINT_NAMES = "example.com www.example.com,api.example.com",
        CERTMAINT_DEPLOY_DIR = dir .. "/node" .. i })
      issuers[i] = testing.issuer { ca = ca, lifetime = "30d", name = p.issuer:storage_key(),
        challenges = p.issuer.challenges }
      nodes[i] = testing.engine(p, { storage = testing.memory { share = shared }, issuer = issuers[i] })
    end
    local function issued()
      local n = 0
      for _, iss in ipairs(issuers) do n = n + iss.issued end
      return n
    end
    assert.equal(2, issued()) -- the first node obtained both; the others loaded them
    assert.equal(2, issuers[1].issued)
    clock:advance(21 * DAY)
    for _, n in ipairs(nodes) do n:tick("renew") end
    assert.equal(4, issued(), "each certificate renewed once across the three nodes")
    for _, name in ipairs { "example.com", "api.example.com" } do
      local serial = nodes[1]:cert(name).serial
      for i = 2, 3 do assert.equal(serial, nodes[i]:cert(name).serial) end
      for i = 1, 3 do
        -- every node's servers get the new certificate, whichever node renewed it
        assert.equal(nodes[1]:cert(name).pem, helpers.read(dir .. "/node" .. i .. "/" .. name .. "/fullchain.pem"))
        assert.is_true(core.key_matches(nodes[1]:cert(name).pem,
          helpers.read(dir .. "/node" .. i .. "/" .. name .. "/privkey.pem")))
      end
    end
    -- the clean pass runs on one node per interval
    local cleaned = 0
    for _, n in ipairs(nodes) do
      -- as the daemon's clean ticker runs it
      local task = loop.spawn(n.engine.tick, n.engine, "clean", { scheduled = true })
      loop.run_until_idle()
      assert(task.done and task.ok, tostring(task.error))
      if not task.results[1].skipped then cleaned = cleaned + 1 end
    end
    assert.equal(1, cleaned)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
