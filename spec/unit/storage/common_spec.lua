-- certmaint.storage.common: key checks, lock records, commit's checks and
-- crash injection (the lock life cycle itself is in spec/contract/).
local common = require "certmaint.storage.common"

describe("storage.common", function()
  it("check_key accepts keys and raises on bad ones", function()
    for _, ok in ipairs { "a", "a/b", "certificates/x/.hidden", "a/..b", "...", "a/.../b" } do
      assert.equal(ok, common.check_key(ok, "t"))
    end
    assert.equal("", common.check_key("", "t", true))
    for _, bad in ipairs { "", "/abs", "trailing/", "a//b", "a/./b", "a/../b", "..", ".", "./a",
      "../a", "a/.", "a/..", "nul\0byte", "back\\slash", ("k"):rep(1025) } do
      assert.is_false(pcall(common.check_key, bad, "t"), bad)
    end
    assert.has_error(function() common.check_key(42, "t") end)
  end)

  it("lock records round-trip, with the grant", function()
    local rec = common.decode_lock(common.encode_lock("h:1:ab", 1700000000.5, 1700000005, "g1"))
    assert.same({ owner = "h:1:ab", created = 1700000000.5, updated = 1700000005, grant = "g1" }, rec)
    rec = common.decode_lock('{"created":"2024-03-01T12:00:00Z","updated":"2024-03-01T12:00:05Z"}')
    assert.equal("unknown", rec.owner)
    assert.is_nil(rec.grant)
    assert.is_nil(common.decode_lock("{}"))
    assert.is_nil(common.decode_lock("garbage"))
  end)

  it("check_commit sorts and checks", function()
    local puts, deletes, fence = common.check_commit({ put = { ["b/x.key"] = "K", ["a/y"] = "Y" },
      delete = { "z", "c" } }, "0644")
    assert.same({ { key = "a/y", value = "Y", mode = "0644" },
      { key = "b/x.key", value = "K", mode = "0600" } }, puts)
    assert.same({ "c", "z" }, deletes)
    assert.is_nil(fence)
    assert.has_error(function() common.check_commit({ delete = { [2] = "k" } }, "0600") end)
  end)

  it("crash_injector raises after n steps and is consumed", function()
    local b = { crash_after = 2 }
    local step = common.crash_injector(b)
    assert.is_nil(b.crash_after)
    step()
    step()
    assert.error_matches(function() step() end, "injected crash", 1, true)
    step = common.crash_injector(b)
    for _ = 1, 100 do step() end
  end)

  it("transaction ids name their time and owner", function()
    local b = { owner = "h:1:ab", stale_after = 10 }
    local id = common.new_txn_id(b, 1700000000.123)
    local created = common.parse_txn_id(id)
    assert.equal(1700000000.123, created)
    assert.is_true(common.txn_abandoned(b, id, 1700000000.2)) -- ours
    assert.is_false(common.txn_abandoned({ owner = "other", stale_after = 10 }, id, 1700000005))
    assert.is_true(common.txn_abandoned({ owner = "other", stale_after = 10 }, id, 1700000011))
  end)
end)
