-- The renewal protocol across instances on a real etcd (spec/helpers/etcd.lua
-- starts one on 127.0.0.1; a missing binary fails this spec): two engines,
-- each with its own etcd storage (its own lease and locks) under one prefix.
-- One renews, the other reloads; a holder whose lock was taken over while its
-- order was in flight is refused by etcd's transaction (commit_fenced) and
-- reloads what the new holder committed.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local certset = require "certmaint.certset"
local etcd = require "helpers.etcd"

local DAY = 86400

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("two instances on one etcd", function()
  local clock, ca, logs, sa, sb

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
    local server = etcd.shared()
    -- stale_after on the spec's clock (the leases, 30 s of real time, outlive each test)
    sa = etcd.storage(server, { stale_after = 10 })
    sb = require("certmaint.storage.etcd").new { endpoints = { server.url }, prefix = sa.prefix, stale_after = 10 }
  end)

  after_each(function()
    sa:close()
    sb:close()
    sa:delete_prefix()
    testing.reset()
  end)

  local function engine(storage, issuer)
    return testing.engine(certmaint.policy { certificates = { "a.test", "b.test" }, storage = storage,
      issuer = issuer or testing.issuer { ca = ca, lifetime = "30d" } })
  end

  it("renews each name once: the other instance re-reads under the lock and reloads", function()
    local ia, ib = testing.issuer { ca = ca, lifetime = "30d" }, testing.issuer { ca = ca, lifetime = "30d" }
    local a, b = engine(sa, ia), engine(sb, ib)
    assert.equal(2, ia.issued)
    assert.equal(0, ib.issued)
    clock:advance(21 * DAY)
    assert.equal(2, a:tick("renew").renewed)
    local tb = b:tick("renew")
    assert.equal(2, tb.reloaded)
    assert.equal(0, tb.renewed)
    assert.equal(4, ia.issued)
    assert.equal(0, ib.issued)
    for _, name in ipairs { "a.test", "b.test" } do assert.equal(a:cert(name).serial, b:cert(name).serial) end
    assert.equal(0, grep(logs(), "level=error"))
  end)

  it("refuses a paused holder's commit in etcd's transaction; it reloads the new holder's certificate", function()
    local inner = testing.issuer { ca = ca, lifetime = "30d" }
    local theirs
    local issuer = { ca = ca }
    function issuer.storage_key() return inner:storage_key() end
    function issuer.describe() return "testing issuer paused mid-order" end
    function issuer.issue(_, req, ctx)
      if theirs == false and req.names[1] == "a.test" then
        -- stalled past the stale time (as under SIGSTOP: its heartbeat reaches
        -- etcd no more; B's requests yield, so A's heartbeat task would run):
        -- B takes the lock over and commits its own set
        local refresh = sa._refresh
        sa._refresh = function() return nil, "paused" end
        clock:advance(sb.stale_after + 1)
        local lock = assert(sb:try_lock(keys.lock_name("a.test")))
        local c = ca:issue { names = { "a.test" }, not_before = clock:now(), not_after = clock:now() + 30 * DAY }
        local facts = assert(core.cert_parse(c.cert_pem))
        assert(certset.write(sb, keys.site_files(inner:storage_key(), "a.test"),
          { crt = c.cert_pem, key = c.key_pem, meta = certset.meta({ "a.test" }, "B", facts.serial, {}) }, lock))
        assert(sb:unlock(lock))
        theirs = { serial = facts.serial }
        sa._refresh = refresh
      end
      return inner:issue(req, ctx)
    end
    local a = engine(sa, issuer)
    clock:advance(21 * DAY)
    theirs = false
    local t = a:tick("renew")
    assert.is_table(theirs)
    assert.equal(1, t.reloaded) -- a.test: lost the lock, reloaded
    assert.equal(1, t.renewed)  -- b.test: renewed as usual
    assert.equal(theirs.serial, a:cert("a.test").serial)
    local stored = assert(core.cert_parse(assert(sa:load(keys.cert(inner:storage_key(), "a.test")))))
    assert.equal(theirs.serial, stored.serial)
    assert.equal(1, grep(logs(), "level=error event=commit_fenced .*lock=issue_cert_a%.test .*token=%d+"))
  end)

  it("revokes its lease on shutdown: a lock it held is free for the other instance at once", function()
    local a = engine(sa)
    assert.truthy(sa:lock("held_at_shutdown.test"))
    assert.falsy((sb:try_lock("held_at_shutdown.test")))
    a:shutdown()
    -- the lease (lock_ttl 30 s) was revoked, not left to run out
    assert.truthy(sb:try_lock("held_at_shutdown.test"))
    assert.equal(0, grep(logs(), "storage_close_failed"))
    sb:unlock("held_at_shutdown.test")
  end)

  it("logs a storage close that fails and stops all the same", function()
    local a = engine(sa)
    local real_close = sa.close
    sa.close = function() return nil, "etcd: connection refused", "connect" end
    a:shutdown()
    sa.close = real_close
    local lines = logs()
    assert.equal(1, grep(lines, "storage_close_failed.*connection refused"))
    assert.equal(1, grep(lines, "event=stopped"))
  end)
end)
