-- policies/acme-ari.lua, offline: its two ACME CAs are played by
-- certmaint.testing issuers in their places (the same storage folders, the
-- policy's own challenges table, so its dns-01 command really runs), which
-- publish ARI windows, rate-limit on demand and fail challenge types.
local testing = require "certmaint.testing"
local helpers = require "helpers.policies"
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local PATH = helpers.ROOT .. "/policies/acme-ari.lua"
local DAY = 86400

describe("policies/acme-ari.lua", function()
  local dir, hook_log, ca, logs, clock

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    logs = testing.capture_logs()
    ca = testing.ca()
    dir = helpers.tmpdir()
    hook_log = dir .. "/dns.log"
    local f = assert(io.open(dir .. "/dns-hook", "w"))
    f:write("#!/bin/sh\necho \"$@\" >> '" .. hook_log .. "'\n")
    f:close()
    assert(os.execute("chmod 755 '" .. dir .. "/dns-hook'"))
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function load()
    return assert(testing.load_policy(PATH, { env = {
      CERTMAINT_DNS_HOOK = dir .. "/dns-hook", CERTMAINT_DEPLOY_DIR = dir .. "/live",
      CERTMAINT_DATA = dir .. "/data", CERTMAINT_EMAIL = "ops@example.com",
    } }))
  end

  -- The policy's two CAs as testing issuers: same folders, same challenges.
  local function stand_ins(policy, o1, o2)
    local members = policy.issuer.members
    local function one(m, o)
      o = o or {}
      o.ca, o.name, o.challenges = ca, m:storage_key(), m.challenges
      return testing.issuer(o)
    end
    return one(members[1], o1), one(members[2], o2)
  end

  local function engine(policy, first, second, storage)
    return testing.engine(policy, { issuer = { first, second }, storage = storage or testing.memory() })
  end

  local function read(path) return helpers.read(path) end

  it("names its issuer on the first line, and lists two ACME CAs in order", function()
    assert.matches("^%-%- issuer: ", read(PATH))
    local policy = load()
    assert.equal(2, #policy.issuer.members)
    assert.equal("in_order", policy.issuer_policy)
    assert.equal("acme-v02.api.letsencrypt.org-directory", policy.issuer.members[1]:storage_key())
    assert.equal("acme.zerossl.com-v2-dv90", policy.issuer.members[2]:storage_key())
  end)

  it("obtains from the first CA; the wildcard through the policy's dns-01 command", function()
    local policy = load()
    local le, zs = stand_ins(policy)
    local storage = testing.memory()
    local e = engine(policy, le, zs, storage)
    assert.equal(2, le.issued)
    assert.equal(0, zs.calls)
    assert.is_not_nil(e:cert("www.example.com"))
    assert.is_not_nil(e:cert("anything.example.com"))
    local log = assert(read(hook_log))
    local value = log:match("present _acme%-challenge%.example%.com (%S+)")
    assert.is_string(value)
    assert.matches("cleanup _acme-challenge.example.com " .. value, log, 1, true)
    assert.is_string(storage:load(keys.cert(le.name, "*.example.com")))
    -- deployed under the name, not the CA
    assert.is_string(read(dir .. "/live/example.com/fullchain.pem"))
    assert.is_string(read(dir .. "/live/wildcard_.example.com/privkey.pem"))
  end)

  it("asks the second CA when the first is rate-limited, keeps it there, and returns to the first later", function()
    local policy = load()
    local le, zs = stand_ins(policy)
    le:rate_limit(2, "6h")
    local storage = testing.memory()
    local e = engine(policy, le, zs, storage)
    assert.equal(0, le.issued)
    assert.equal(2, zs.issued)
    assert.is_string(storage:load(keys.cert(zs.name, "example.com")))
    assert.equal(2, #e:cache())
    local deployed = read(dir .. "/live/example.com/fullchain.pem")
    assert.is_string(deployed)
    -- a restart (the same list) finds them under the second CA: nothing ordered again
    local le2, zs2 = stand_ins(load())
    local e2 = engine(load(), le2, zs2, storage)
    assert.equal(0, le2.calls + zs2.calls)
    assert.equal(2, #e2:cache())
    -- the renewal goes to the first CA again, its rate limit long over
    clock:advance("61d")
    e2:tick("renew")
    assert.equal(2, le2.issued)
    assert.is_string(storage:load(keys.cert(le2.name, "example.com")))
    assert.are_not.equal(deployed, read(dir .. "/live/example.com/fullchain.pem"))
  end)

  it("renews inside the first CA's ARI window, and at once when the window moves into the past", function()
    local policy = load()
    local revoked = {}
    local le, zs = stand_ins(policy, { ari = function(cert, now)
      if revoked[cert.serial] then return "past" end
      return { start = cert.not_before + 45 * DAY, ["end"] = cert.not_before + 47 * DAY }
    end, ari_retry_after = "1h" })
    local e = engine(policy, le, zs)
    local c = e:cert("example.com")
    assert.is_true(c.renew_at >= c.not_before + 45 * DAY and c.renew_at <= c.not_before + 47 * DAY)
    clock:advance("44d")
    e:tick("renew")
    assert.equal(2, le.issued)
    -- the CA revokes it and says so through ARI: replaced on the next fetch, not at day 45
    revoked[c.serial] = true
    clock:advance("1h1s")
    e:tick("renew")
    assert.equal(3, le.issued)
    local new = e:cert("example.com")
    assert.are_not.equal(c.serial, new.serial)
    assert.equal(core.ari_cert_id(c.pem), le.reqs[3].replaces)
  end)

  it("falls back to the second CA when the first's dns-01 validation fails, and reports a name neither can do", function()
    local policy = load()
    local le, zs = stand_ins(policy, { fail_challenge = "dns-01" })
    local e = engine(policy, le, zs)
    assert.equal(1, le.issued) -- example.com + www over http-01
    assert.equal(1, zs.issued) -- the wildcard
    zs:fail_challenge("dns-01")
    clock:advance("61d")
    local seen = {}
    e:tick("renew")
    for _, l in ipairs(logs()) do
      if l:find("event=acme_ari_renew_failed", 1, true) then seen[#seen + 1] = l end
    end
    assert.equal(1, #seen)
    assert.matches('dns%-01 challenge for \\?"%*%.example%.com\\?"', seen[1])
    assert.is_not_nil(e:cert("anything.example.com")) -- the old one still serves
  end)
end)
