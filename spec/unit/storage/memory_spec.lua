-- certmaint.storage.memory beyond the contract: its directories are counted
-- (a store or a delete never scans the store), so they must follow every
-- change of the files exactly.
local memory = require "certmaint.storage.memory"

describe("storage.memory directories", function()
  it("exist while a file lies below them, and go with the last one", function()
    local s = memory.new()
    assert.is_true(s:store("a/b/one", "1"))
    assert.is_true(s:store("a/b/one", "1 again")) -- an overwrite adds no file
    assert.is_true(s:store("a/b/two", "2"))
    assert.is_true(s:exists("a/b"))
    assert.is_true(s:delete("a/b/one"))
    assert.is_true(s:exists("a"))
    assert.equal("EISDIR", select(3, s:store("a/b", "x")))
    assert.is_true(s:delete("a/b/two"))
    assert.is_false(s:exists("a/b"))
    assert.is_false(s:exists("a"))
    assert.equal("ENOENT", select(3, s:list("a", true)))
    -- the name is free for a file now
    assert.is_true(s:store("a", "file"))
    assert.equal("ENOTDIR", select(3, s:store("a/c", "x")))
  end)

  it("go with a deleted tree, and a commit counts its puts and deletes", function()
    local s = memory.new()
    for i = 1, 50 do assert.is_true(s:store("t/" .. (i % 5) .. "/k" .. i, "v")) end
    assert.is_true(s:delete("t/3"))
    assert.is_false(s:exists("t/3"))
    assert.is_true(s:exists("t/4"))
    assert.equal(40, #s:list("t", true))
    assert.is_true(s:delete("t"))
    assert.is_false(s:exists("t"))
    local lock = assert(s:lock("set"))
    assert(s:commit { put = { ["c/x/y"] = "1", ["c/z"] = "2" }, fence = lock })
    assert.is_true(s:exists("c/x"))
    assert(s:commit { delete = { "c/x/y" }, fence = lock })
    assert.is_false(s:exists("c/x"))
    assert.is_true(s:exists("c"))
    s:unlock(lock)
  end)
end)
