-- cache:verify_staples / cache:verify_staples_start (core/ocsp_batch.c) seen
-- from Lua, over tests/fixtures/ocsp/ (its README says what each file must
-- give): each outcome is core.ocsp_response_parse's, with 0 or 2 threads,
-- from strings or files; attach; argument errors; one value returned each.
local core = require "certmaint.core"

local read = require("helpers.fixtures").reader("ocsp")

local T, DAY = 1767225600, 86400
local NOW = T + 3600
local CA, LEAF, OTHER_CA = read("ca.pem"), read("leaf.pem"), read("other_ca.pem")
local CASES = { "ocsp_good.der", "ocsp_revoked_1.der", "ocsp_revoked_none.der", "ocsp_unknown.der",
  "ocsp_delegated.der", "ocsp_good_no_next.der", "ocsp_wrong_key.der", "ocsp_delegated_no_eku.der",
  "ocsp_truncated.der", "ocsp_garbage.der", "ocsp_stale.der", "ocsp_notyet.der", "ocsp_status_tryLater.der" }

local function pack(...) return select("#", ...), ... end

describe("cache:verify_staples", function()
  local cache, id, wrong_id
  before_each(function()
    cache = core.cache_new()
    id = assert(cache:add(LEAF .. CA))
    wrong_id = assert(cache:add(read("leaf_must_staple.pem") .. OTHER_CA)) -- the wrong issuer
  end)
  after_each(function() cache:close() end)

  local function batch_of(n)
    local ids, ders, want = {}, {}, {}
    for i = 1, n do
      local name = CASES[(i - 1) % #CASES + 1]
      ids[i], ders[i] = id, read(name)
      want[i] = { core.ocsp_response_parse(ders[i], LEAF, CA, NOW, 300) }
    end
    ids[n + 1], ders[n + 1] = wrong_id, read("ocsp_good.der")
    want[n + 1] = { core.ocsp_response_parse(ders[n + 1], read("leaf_must_staple.pem"), OTHER_CA, NOW, 300) }
    return ids, ders, want
  end

  local function same(r, want)
    for i, w in ipairs(want) do
      local info, err, code = w[1], w[2], w[3]
      if info then
        assert.is_true(r.ok[i], r.error[i])
        for _, k in ipairs { "status", "this_update", "next_update", "produced_at", "revoked_at", "reason" } do
          assert.equal(info[k], r[k][i], k .. " of " .. i)
        end
        assert.is_nil(r.error[i])
      else
        assert.is_false(r.ok[i])
        assert.equal(code, r.code[i])
        assert.equal(err, r.error[i])
        assert.is_nil(r.status[i])
      end
      assert.is_false(r.attached[i])
    end
  end

  it("gives each response what core.ocsp_response_parse gives, with 0 or 2 threads", function()
    local ids, ders, want = batch_of(5 * #CASES)
    assert.equal("verify", want[#want][3])
    for _, threads in ipairs { 0, 2 } do
      local n, r = pack(cache:verify_staples(ids, ders, { now = NOW, threads = threads }))
      assert.equal(1, n)
      same(r, want)
      assert.equal(T + 3.5 * DAY, r.refresh_at[1])
    end
  end)

  it("reads the responses from files on the threads, and says which are missing or too big", function()
    local ids, ders, want = batch_of(#CASES)
    local base = os.tmpname()
    local paths = {}
    for i, der in ipairs(ders) do
      paths[i] = base .. "." .. i
      local f = assert(io.open(paths[i], "wb"))
      f:write(der)
      f:close()
    end
    local r = cache:verify_staples(ids, paths, { now = NOW, files = true, ders = true })
    same(r, want)
    assert.equal(ders[1], r.der[1])
    r = cache:verify_staples({ id, id }, { base .. ".none", paths[1] }, { now = NOW, files = true, max_bytes = #ders[1] - 1 })
    assert.same({ false, false }, r.ok)
    assert.same({ "ENOENT", "toobig" }, r.code)
    for _, p in ipairs(paths) do os.remove(p) end
    os.remove(base)
  end)

  it("two steps: ready never blocks, finish gives the results once", function()
    local ids, ders, want = batch_of(3 * #CASES)
    local n, b = pack(cache:verify_staples_start(ids, ders, { now = NOW, threads = 2 }))
    assert.equal(1, n)
    while not b:ready() do end
    assert.is_true(b:ready())
    local m, r = pack(b:finish())
    assert.equal(1, m)
    same(r, want)
    assert.error_matches(function() b:finish() end, "finished already")
    assert.error_matches(function() b:ready() end, "finished already")
    b:drop() -- after finish: nothing to do
  end)

  it("a dropped batch attaches nothing", function()
    local b = cache:verify_staples_start({ id }, { read("ocsp_good.der") }, { now = NOW, attach = true })
    b:drop()
    b:drop()
    assert.error_matches(function() b:finish() end, "dropped")
    assert.is_nil(cache:get(id).ocsp)
  end)

  it("attach: takes good and revoked with a nextUpdate onto an entry without a newer staple", function()
    local opts = { now = NOW, attach = true }
    for _, name in ipairs { "ocsp_unknown.der", "ocsp_good_no_next.der", "ocsp_wrong_key.der", "ocsp_stale.der" } do
      local r = cache:verify_staples({ id }, { read(name) }, opts)
      assert.is_false(r.attached[1], name)
    end
    assert.is_nil(cache:get(id).ocsp)
    local r = cache:verify_staples({ id }, { read("ocsp_revoked_1.der") }, opts)
    assert.is_true(r.attached[1])
    local st = cache:get(id).ocsp
    assert.equal("revoked", st.status)
    assert.equal(read("ocsp_revoked_1.der"), st.der)
    assert.equal(T + 3.5 * DAY, st.refresh_at)
    -- the same thisUpdate is not newer
    r = cache:verify_staples({ id }, { read("ocsp_good.der") }, opts)
    assert.is_true(r.ok[1])
    assert.is_false(r.attached[1])
    assert.equal("revoked", cache:get(id).ocsp.status)
    -- an entry that is gone, or has no issuer
    local lonely = assert(cache:add(read("rogue_responder.pem")))
    r = cache:verify_staples({ ("ab"):rep(32), lonely }, { read("ocsp_good.der"), read("ocsp_good.der") }, opts)
    assert.same({ "absent", "chain" }, r.code)
  end)

  it("verify = false parses without checking the signature; attach needs it", function()
    local r = cache:verify_staples({ id, id }, { read("ocsp_delegated_no_eku.der"), read("ocsp_stale.der") },
      { now = NOW, verify = false })
    assert.same({ true, false }, r.ok)
    assert.equal("good", r.status[1])
    assert.equal("stale", r.code[2])
    assert.error_matches(function()
      cache:verify_staples({ id }, { read("ocsp_good.der") }, { now = NOW, verify = false, attach = true })
    end, "attach.*needs verify")
  end)

  it("raises for a caller's mistakes, naming them", function()
    local der = read("ocsp_good.der")
    assert.error_matches(function() cache:verify_staples("x", {}) end, "bad argument")
    assert.error_matches(function() cache:verify_staples({ id }, { der, der }) end, "1 ids but 2 responses")
    assert.error_matches(function() cache:verify_staples({ "nope" }, { der }) end, "ids%[1%] must be a certificate id")
    assert.error_matches(function() cache:verify_staples({ id }, { 5 }) end, "responses%[1%] must be a string")
    assert.error_matches(function() cache:verify_staples({ id }, { "a\0b" }, { files = true }) end, "must be a file path")
    assert.error_matches(function() cache:verify_staples({ id }, { der }, { threads = 99 }) end, "threads")
    assert.error_matches(function() cache:verify_staples({ id }, { der }, { max_bytes = 0 }) end, "max_bytes")
    assert.error_matches(function() cache:verify_staples({ id }, { der }, { skew = -1 }) end, "skew")
    assert.error_matches(function() cache:verify_staples({ id }, { der }, { attach = true }) end, "needs 'now'")
    assert.error_matches(function() cache:verify_staples({ id }, { der }, { tiemout = 1 }) end, 'unknown option "tiemout"')
    local closed = core.cache_new()
    closed:close()
    assert.error_matches(function() closed:verify_staples({}, {}) end, "closed cache")
    -- a cache closed while a batch runs
    local other = core.cache_new()
    local oid = assert(other:add(LEAF .. CA))
    local b = other:verify_staples_start({ oid }, { der }, { now = NOW })
    other:close()
    assert.error_matches(function() b:finish() end, "closed cache")
  end)

  it("an empty batch is fine", function()
    local r = cache:verify_staples({}, {}, { now = NOW })
    assert.same({}, r.ok)
    assert.is_true(cache:verify_staples_start({}, {}):ready())
  end)
end)
