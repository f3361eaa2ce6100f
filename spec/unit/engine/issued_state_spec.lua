-- What an issuer may hand back beside the chain (certmaint.issuer): key_pem,
-- when the certificate is for another key than the one the engine made (an
-- ACME order finished after a crash, with the earlier attempt's key), and
-- commit_deletes, its order state, deleted in the commit that stores the set.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local loop = require "certmaint.loop"

local NAME = "example.com"
local ORDER = "certmaint/acme/orders/x/example.com.json"
local ORDER_KEY = "certmaint/acme/orders/x/example.com.key"

local function load(storage, key)
  local task = loop.spawn(function() return storage:load(key) end)
  loop.run_until_idle()
  return task.results and task.results[1]
end

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("an issuer's key_pem and commit_deletes", function()
  local ca, logs, storage
  before_each(function()
    testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    storage = testing.memory()
  end)
  after_each(testing.reset)

  -- an issuer that answers with a certificate for its own key (the earlier
  -- attempt's), as issuer.acme does for an order resumed after finalize
  local function resuming_issuer(extra)
    local own_key = assert(core.key_generate("p256"))
    local iss = { calls = 0, key = own_key }
    function iss.issue(_, req)
      iss.calls = iss.calls + 1
      iss.offered = req.key_pem
      local r = ca:issue { names = req.names, csr = (core.csr_create(own_key, req.names)) }
      local res = { chain_pem = r.cert_pem, key_pem = own_key, commit_deletes = { ORDER, ORDER_KEY } }
      for k, v in pairs(extra or {}) do res[k] = v end
      return res
    end
    function iss.storage_key() return "x" end
    return iss
  end

  local function seed_order()
    local task = loop.spawn(function()
      assert(storage:store(ORDER, '{"url":"https://ca.test/order/1"}'))
      assert(storage:store(ORDER_KEY, "pending key"))
    end)
    loop.run_until_idle()
    assert(task.status == "done" or task.results)
  end

  it("stores the issuer's key_pem with the certificate and deletes the order state in the same commit", function()
    seed_order()
    local iss = resuming_issuer()
    local e = testing.engine(certmaint.policy { certificates = { NAME }, issuer = iss, storage = storage })
    assert.equal(1, iss.calls)
    assert.is_string(iss.offered) -- the engine offers the key it made for the CSR
    assert.are_not.equal(iss.key, iss.offered)
    assert.equal(iss.key, load(storage, keys.private_key("x", NAME)))
    assert.is_true(core.key_matches(load(storage, keys.cert("x", NAME)), iss.key))
    assert.is_nil(load(storage, ORDER))
    assert.is_nil(load(storage, ORDER_KEY))
    assert.is_not_nil(e:cert(NAME))
  end)

  it("keeps the order state when the commit fails, so the next attempt can finish it", function()
    seed_order()
    local commit = storage.commit
    storage.commit = function() return nil, "storage unavailable", "unavailable" end
    local iss = resuming_issuer()
    local e = testing.engine(certmaint.policy { certificates = { NAME }, issuer = iss, storage = storage })
    storage.commit = commit
    assert.is_nil(e:cert(NAME))
    assert.equal("pending key", load(storage, ORDER_KEY))
    assert.is_string(load(storage, ORDER))
  end)

  it("refuses a key_pem the certificate is not for, and keeps nothing of it", function()
    local iss = resuming_issuer { key_pem = assert(core.key_generate("p256")) }
    local e = testing.engine(certmaint.policy { certificates = { NAME }, issuer = iss, storage = storage })
    assert.is_nil(e:cert(NAME))
    assert.is_nil(load(storage, keys.cert("x", NAME)))
    assert.is_true(grep(logs(), "issuer returned a certificate for another key") >= 1)
  end)

  for what, bad in pairs { ["a string"] = "certmaint/x", ["a list with a number"] = { ORDER, 3 },
      ["a list with an empty key"] = { "" } } do
    it("refuses commit_deletes that is " .. what .. ", naming the issuer", function()
      local iss = resuming_issuer { commit_deletes = bad }
      local e = testing.engine(certmaint.policy { certificates = { NAME }, issuer = iss, storage = storage })
      assert.is_nil(e:cert(NAME))
      assert.is_true(grep(logs(), "returned commit_deletes that is not a list of storage keys") >= 1)
    end)
  end
end)
