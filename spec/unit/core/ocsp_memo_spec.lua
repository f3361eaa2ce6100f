-- core.ocsp_memo (core/ocsp_memo.c) with cache:verify_staples: a signature
-- checked good once is not checked again, and the memo changes no outcome:
-- every result is core.ocsp_response_parse's, hits or not; a tampered
-- signature, another issuer's key or a damaged file never makes a response
-- pass; the file is 0600, appended to, rewritten when damaged.
local core = require "certmaint.core"
local lfs = require "lfs"

local read = require("helpers.fixtures").reader("ocsp")

local T = 1767225600
local NOW = T + 3600
local CA, LEAF, OTHER_CA = read("ca.pem"), read("leaf.pem"), read("other_ca.pem")
local CASES = { "ocsp_good.der", "ocsp_revoked_1.der", "ocsp_revoked_none.der", "ocsp_unknown.der",
  "ocsp_delegated.der", "ocsp_good_no_next.der", "ocsp_wrong_key.der", "ocsp_delegated_no_eku.der",
  "ocsp_truncated.der", "ocsp_garbage.der", "ocsp_stale.der", "ocsp_notyet.der", "ocsp_status_tryLater.der" }
local MAGIC = "certmaint ocsp-verified 1\n"

local slurp = require("helpers.policies").read

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- der with its last byte (inside the signature's s) changed
local function tampered(der) return der:sub(1, -2) .. string.char((der:byte(-1) + 1) % 256) end

describe("core.ocsp_memo", function()
  local cache, id, other_id, dir, path
  before_each(function()
    cache = core.cache_new()
    id = assert(cache:add(LEAF .. CA))
    other_id = assert(cache:add(read("leaf_must_staple.pem") .. OTHER_CA))
    dir = os.tmpname()
    os.remove(dir)
    assert(lfs.mkdir(dir))
    path = dir .. "/memo"
  end)
  after_each(function()
    cache:close()
    os.remove(path)
    for f in lfs.dir(dir) do if f ~= "." and f ~= ".." then os.remove(dir .. "/" .. f) end end
    lfs.rmdir(dir)
  end)

  local function batch()
    local ids, ders, want = {}, {}, {}
    for i, name in ipairs(CASES) do
      ids[i], ders[i] = id, read(name)
      want[i] = { core.ocsp_response_parse(ders[i], LEAF, CA, NOW, 300) }
    end
    local extra = {
      { other_id, read("ocsp_good.der"), read("leaf_must_staple.pem"), OTHER_CA }, -- the other issuer's key
      { id, tampered(read("ocsp_good.der")), LEAF, CA },
      { id, tampered(read("ocsp_revoked_1.der")), LEAF, CA },
    }
    for _, e in ipairs(extra) do
      ids[#ids + 1], ders[#ders + 1] = e[1], e[2]
      want[#want + 1] = { core.ocsp_response_parse(e[2], e[3], e[4], NOW, 300) }
    end
    return ids, ders, want
  end

  local function same(r, want)
    for i, w in ipairs(want) do
      if w[1] then
        assert.is_true(r.ok[i], r.error[i])
        for _, k in ipairs { "status", "this_update", "next_update", "produced_at", "revoked_at", "reason" } do
          assert.equal(w[1][k], r[k][i], k .. " of " .. i)
        end
      else
        assert.is_false(r.ok[i], "item " .. i)
        assert.equal(w[3], r.code[i], "item " .. i)
        assert.equal(w[2], r.error[i], "item " .. i)
      end
    end
  end

  it("a missing file is an empty memo; results are the same with and without hits", function()
    local memo = assert(core.ocsp_memo(path))
    assert.same({ entries = 0, file_records = 0, hits = 0, added = 0, damaged = false }, memo:stats())
    local ids, ders, want = batch()
    assert.equal("verify", want[#want][3]) -- the tampered ones fail
    for _, threads in ipairs { 0, 2 } do
      same(cache:verify_staples(ids, ders, { now = NOW, threads = threads, memo = memo }), want)
    end
    local st = memo:stats()
    -- good, revoked_1, revoked_none, unknown, good_no_next, stale, notyet: signed by the CA
    -- itself and good signatures (times are checked after, each time); delegated ones are not memoised
    assert.is_true(st.added >= 5, "added " .. st.added)
    assert.equal(st.added, st.entries)
    assert.is_true(st.hits >= st.added, "the second run hit each: " .. st.hits)
    assert.is_true(memo:flush())
    memo:close()
    local bytes = assert(slurp(path))
    assert.equal(MAGIC, bytes:sub(1, #MAGIC))
    assert.equal(#MAGIC + 32 * st.added, #bytes)
    assert.equal("rw-------", lfs.attributes(path, "permissions"))

    -- reopened: hits from the first batch, the same outcomes
    memo = assert(core.ocsp_memo(path))
    assert.equal(st.added, memo:stats().entries)
    same(cache:verify_staples(ids, ders, { now = NOW, threads = 2, memo = memo }), want)
    assert.is_true(memo:stats().hits >= st.added)
    assert.equal(0, memo:stats().added)
    memo:close()
  end)

  it("appends what is new, and a damaged file costs checks, never a wrong outcome", function()
    local memo = assert(core.ocsp_memo(path))
    local r = cache:verify_staples({ id }, { read("ocsp_good.der") }, { now = NOW, memo = memo })
    assert.is_true(r.ok[1])
    assert.is_true(memo:flush())
    assert.equal(#MAGIC + 32, #slurp(path))
    r = cache:verify_staples({ id }, { read("ocsp_revoked_1.der") }, { now = NOW, memo = memo })
    assert.is_true(memo:flush())
    assert.equal(#MAGIC + 64, #slurp(path)) -- appended
    memo:close()

    local ids, ders, want = batch()
    for _, damage in ipairs {
      function(s) return s:sub(1, -5) end,                    -- a torn last record
      function(s) return "not a memo\n" .. s end,              -- a wrong magic line
      function(s) return MAGIC .. ("\255"):rep(32 * 40) end,   -- garbage records
      function() return "" end,                                -- empty
    } do
      spit(path, damage(slurp(path) or ""))
      memo = assert(core.ocsp_memo(path))
      same(cache:verify_staples(ids, ders, { now = NOW, threads = 2, memo = memo }), want)
      assert.is_true(memo:flush())
      local bytes = slurp(path)
      assert.equal(MAGIC, bytes:sub(1, #MAGIC), "rewritten whole")
      assert.equal(0, (#bytes - #MAGIC) % 32)
      memo:close()
    end
  end)

  it("fails with the errno name for a path it cannot read; raises on misuse", function()
    local memo, err, code = core.ocsp_memo(dir) -- a folder
    assert.is_nil(memo)
    assert.equal("EISDIR", code)
    assert.matches(dir, err, 1, true)
    memo = assert(core.ocsp_memo(dir .. "/no/such/folder/memo")) -- read: missing is empty
    local ok, ferr, fcode = cache:verify_staples({ id }, { read("ocsp_good.der") }, { now = NOW, memo = memo })
    assert.is_true(ok.ok[1], ferr)
    ok, ferr, fcode = memo:flush()
    assert.is_nil(ok)
    assert.equal("ENOENT", fcode)
    assert.matches("cannot open", ferr)
    assert.equal(1, memo:stats().added) -- kept for the next flush
    memo:close()
    assert.error_matches(function() memo:stats() end, "closed ocsp memo")
    assert.error_matches(function() cache:verify_staples({ id }, { read("ocsp_good.der") }, { memo = {} }) end,
      "ocsp_memo")
  end)
end)
