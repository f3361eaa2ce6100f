-- What the etcd backend promises beyond the storage contract (which
-- spec/contract/storage_spec.lua checks against it too): pagination, leases,
-- fencing by etcd itself, fail-over, errors naming the endpoint, auth.  Runs
-- against real etcd servers started on 127.0.0.1 (spec/helpers/etcd.lua).
local core = require "certmaint.core"
local etcd_helper = require "helpers.etcd"
local etcd = require "certmaint.storage.etcd"

--- Wait (real time, polling) until fn() is truthy -> its value; fails after
-- `limit` seconds so a broken backend cannot hang the suite (a bound on
-- waiting, not on speed: nothing here asserts how long it took).
local function eventually(fn, limit)
  local deadline = core.monotonic() + (limit or 20)
  while core.monotonic() < deadline do
    local v = fn()
    if v then return v end
    os.execute("sleep 0.2")
  end
  error("still not true after " .. (limit or 20) .. " s", 2)
end

local function logged(event)
  local n = 0
  for _, line in ipairs(core.log_take()) do
    if line:find("event=" .. event .. " ", 1, true) then n = n + 1 end
  end
  return n
end

describe("etcd storage", function()
  local server, a, b

  before_each(function()
    server = etcd_helper.shared()
    a = etcd_helper.storage(server)
    b = etcd.new { endpoints = { server.url }, prefix = a.prefix }
    core.log_config { capture = true }
    core.log_take()
  end)

  after_each(function()
    core.log_config { capture = false }
    core.log_take()
    core.clock_set(nil)
    a:close()
    b:close()
    a:delete_prefix()
  end)

  it("checks its options", function()
    assert.has_error(function() etcd.new {} end, nil)
    assert.has_error(function() etcd.new { endpoints = {} } end)
    assert.has_error(function() etcd.new { endpoints = { "127.0.0.1:2379" } } end)
    assert.has_error(function() etcd.new { endpoints = { "http://127.0.0.1:2379/v3" } } end)
    assert.has_error(function() etcd.new { endpoints = { server.url }, prefix = "certmaint" } end)
    assert.has_error(function() etcd.new { endpoints = { server.url }, prefix = "/certmaint/" } end)
    assert.has_error(function() etcd.new { endpoints = { server.url }, lock_ttl = "1s" } end)
    assert.has_error(function() etcd.new { endpoints = { server.url }, username = "u" } end)
    assert.has_error(function() etcd.new { endpoints = { server.url }, endpiont = "x" } end)
    local s = etcd.new { endpoints = { server.url }, lock_ttl = "1m", timeout = "3s" }
    assert.equal(60, s.lock_ttl)
    assert.equal(120, s.stale_after) -- 2 x lock_ttl: the lease frees a lock first
    assert.equal(5, s.heartbeat_interval)
    -- a short lease is kept alive twice per TTL, not every 5 s (it would expire between beats)
    assert.equal(1, etcd.new { endpoints = { server.url }, lock_ttl = "2s" }.heartbeat_interval)
    assert.equal(2, etcd.new { endpoints = { server.url }, lock_ttl = "30s", stale_after = "4s" }.heartbeat_interval)
    assert.has_error(function() etcd.new { endpoints = { server.url }, stale_after = 0 } end)
    assert.equal(3, s.timeout)
    assert.equal("etcd:" .. server.url .. "/certmaint", s:describe())
  end)

  it("keeps values under <prefix>/data/ behind an envelope with the modified time", function()
    core.clock_set(1700000000.5)
    assert.is_true(a:store("certificates/x/x.crt", "PEM"))
    local doc = assert(a:call("/v3/kv/range", { key = core.base64_encode(a.prefix .. "/data/certificates/x/x.crt") }))
    assert.equal("certmaint:1 1700000000500\nPEM", core.base64_decode(doc.kvs[1].value))
    assert.equal(1700000000.5, a:stat("certificates/x/x.crt").modified)
    -- a value certmaint did not write is refused, not misread
    assert(a:call("/v3/kv/put", { key = core.base64_encode(a.prefix .. "/data/foreign"),
      value = core.base64_encode("raw") }))
    local v, _, code = a:load("foreign")
    assert.is_nil(v)
    assert.equal("parse", code)
  end)

  it("stats a directory with its newest value's modified time", function()
    core.clock_set(1700000000)
    assert.is_true(a:store("d/older", "1"))
    core.clock_set(1700000500)
    assert.is_true(a:store("d/sub/newer", "22"))
    core.clock_set(1700000100)
    assert.is_true(a:store("d/middle", "333")) -- written last, but with an earlier clock
    local st = assert(b:stat("d"))
    assert.is_false(st.terminal)
    assert.equal(1700000100, st.modified) -- the last written (etcd's revisions order them)
    assert.equal(3, b:stat("d/middle").size)
    assert.equal(1700000500, b:stat("d/sub/newer").modified)
  end)

  it("lists over more than one page, and skips over child directories", function()
    local saved = etcd.PAGE
    etcd.PAGE = 10
    local put = {}
    for i = 1, 35 do put[string.format("certificates/ca/n%02d.example/n%02d.crt", i, i)] = "c" .. i end
    for i = 1, 5 do put["ocsp/s" .. i] = "s" .. i end
    assert.is_true(a:commit { put = put })
    local before = a.requests
    local all = a:list("certificates/ca", true)
    local pages = a.requests - before
    etcd.PAGE = saved
    assert.equal(35, #all)
    for i = 1, 35 do assert.equal(string.format("certificates/ca/n%02d.example/n%02d.crt", i, i), all[i]) end
    assert.equal(4, pages) -- 10 + 10 + 10 + 5
    etcd.PAGE = 10
    before = a.requests
    local top = a:list("", false)
    local top_requests = a.requests - before
    local dirs = a:list("certificates/ca", false)
    etcd.PAGE = saved
    assert.same({ "certificates", "ocsp" }, top)
    assert.equal(2, top_requests) -- one key of certificates/, then past it to ocsp/
    assert.equal(35, #dirs)
    assert.equal("certificates/ca/n01.example", dirs[1])
  end)

  it("loads many keys in batches of txn ops", function()
    local put, list = {}, {}
    for i = 1, 300 do
      local k = "certificates/ca/m" .. i .. "/m" .. i .. ".crt"
      list[#list + 1] = k
      if i % 3 ~= 0 then put[k] = "v" .. i end
    end
    local batch, n = {}, 0
    for k, v in pairs(put) do
      batch[k], n = v, n + 1
      if n == 40 then assert.is_true(a:commit { put = batch }) batch, n = {}, 0 end
    end
    assert.is_true(a:commit { put = batch })
    local before = b.requests
    local found, failed = b:load_many(list)
    local requests = b.requests - before
    for i, k in ipairs(list) do
      if i % 3 ~= 0 then assert.equal("v" .. i, found[k]) else assert.equal("ENOENT", failed[k].code) end
    end
    -- 300 values in ceil(300 / 128) txns, then the 100 missing asked whether directories
    assert.equal(3 + 1, requests)
  end)

  it("frees a crashed holder's lock when its lease expires", function()
    local short = etcd.new { endpoints = { server.url }, prefix = a.prefix, lock_ttl = 2 }
    local held = assert(short:lock("issue_cert_lease.example"))
    local _, _, code = b:lock("issue_cert_lease.example")
    assert.equal("locked", code)
    -- short "crashes": no heartbeat; the lease runs out in etcd's time
    local got = eventually(function() return (b:try_lock("issue_cert_lease.example")) end)
    assert.is_true(got.token > held.token)
    assert.equal(0, logged("lock_taken_over")) -- freed by etcd, not taken over
    local refreshed, lost = short:refresh_locks()
    assert.equal(0, refreshed)
    assert.same({ "issue_cert_lease.example" }, lost)
    local ok, _, c2 = short:commit { put = { ["k/late"] = "x" }, fence = held }
    assert.is_nil(ok)
    assert.equal("fenced", c2)
    assert.is_false(b:exists("k/late"))
  end)

  it("has etcd refuse a fenced commit of a holder that has not noticed it lost the lock", function()
    local short = etcd.new { endpoints = { server.url }, prefix = a.prefix, lock_ttl = 2 }
    local old = assert(short:lock("issue_cert_fence.example"))
    local new = eventually(function() return (b:try_lock("issue_cert_fence.example")) end)
    assert.is_true(b:commit { put = { ["certificates/ca/f/f.crt"] = "NEW" }, fence = new })
    -- the paused holder has not beaten since: it still believes it holds
    -- the lock, and only the txn's compare can refuse it
    assert.equal(old, short.held[old.key])
    local ok, err, code = short:commit { put = { ["certificates/ca/f/f.crt"] = "OLD" },
      delete = { "ocsp" }, fence = old }
    assert.is_nil(ok)
    assert.equal("fenced", code)
    assert.matches("issue_cert_fence.example", err, 1, true)
    assert.equal(1, logged("etcd_commit_fenced"))
    assert.equal("NEW", a:load("certificates/ca/f/f.crt"))
  end)

  it("takes a grant whose first try was applied but unanswered as granted (retry after fail-over)", function()
    local common = require "certmaint.storage.common"
    local lk = common.lock_key("issue_cert_retry.example")
    local grant = common.new_grant()
    assert(a:ensure_lease())
    -- the first try of the grant's txn reached etcd; its answer was lost
    local first = assert(a:txn(nil, a:grant_ops(lk, grant, a.lease, core.now())))
    local ok, token = a:_acquire(lk, "issue_cert_retry.example", grant)
    assert.is_true(ok)
    assert.equal(math.tointeger(tonumber(first.header.revision)), token)
    -- and it is a real grant: refreshed, fencing, released
    a.held[lk] = { name = "issue_cert_retry.example", key = lk, token = token, grant = grant,
      owner = a.owner, acquired = core.now() }
    assert.equal(1, (a:refresh_locks()))
    assert.is_true(a:commit { put = { ["r/v"] = "1" }, fence = a.held[lk] })
    assert.is_true(a:unlock("issue_cert_retry.example"))
    assert.truthy(b:lock("issue_cert_retry.example"))
  end)

  it("binds the locks that tasks take at once to one lease, which the heartbeat keeps", function()
    local loop = require "certmaint.loop"
    local tasks = {}
    for i = 1, 6 do
      tasks[i] = loop.spawn(function() return a:lock("issue_cert_par" .. i .. ".example") end)
    end
    assert.is_true(loop.run_until(function()
      for _, t in ipairs(tasks) do if not t.done then return false end end
      return true
    end, { timeout = 30 }))
    loop.reset()
    local leases = {}
    for _, t in ipairs(tasks) do
      assert.is_true(t.ok, t.error)
      local lock = assert(t.results[1])
      leases[a.grant_lease[lock.grant]] = true
    end
    assert.same({ [a.lease] = true }, leases)
    local before = a.requests
    assert.equal(6, (a:refresh_locks()))
    assert.equal(1 + 6, a.requests - before) -- one keepalive, one beat a lock
    assert.is_true(a:close())
    for i = 1, 6 do assert.truthy(b:try_lock("issue_cert_par" .. i .. ".example")) end
  end)

  it("keeps alive an older lease that still holds locks after a new one was taken", function()
    local short = etcd.new { endpoints = { server.url }, prefix = a.prefix, lock_ttl = 4 }
    local first = assert(short:lock("issue_cert_old.example"))
    local old_lease = short.lease
    short.lease_until = core.monotonic() -- as if past half its TTL (etcd was out of reach)
    local second = assert(short:lock("issue_cert_new.example"))
    assert.is_true(short.lease ~= old_lease)
    assert.equal(old_lease, short.grant_lease[first.grant])
    -- beats for longer than the TTL: both leases, so both locks, live on
    for _ = 1, 4 do
      assert.equal(2, (short:refresh_locks()))
      os.execute("sleep 1.5")
    end
    assert.equal(2, (short:refresh_locks()))
    local _, _, code = b:lock("issue_cert_old.example")
    assert.equal("locked", code)
    assert.is_true(short:commit { put = { ["o/v"] = "1" }, fence = first })
    assert.is_true(short:commit { put = { ["o/w"] = "2" }, fence = second })
    assert.is_true(short:close()) -- revokes both
    assert.truthy(b:try_lock("issue_cert_old.example"))
    assert.truthy(b:try_lock("issue_cert_new.example"))
  end)

  it("gives tokens that are etcd revisions: larger across instances and prefixes", function()
    local l1 = assert(a:lock("issue_cert_t.example"))
    assert.is_true(a:store("x", "1"))
    assert.is_true(a:unlock(l1))
    local other = etcd_helper.storage(server)
    local l2 = assert(other:lock("issue_cert_t.example"))
    assert.is_true(l2.token > l1.token)
    local l3 = assert(b:lock("issue_cert_t.example"))
    assert.is_true(l3.token > l2.token)
    assert.is_true(other:close())
    other:delete_prefix()
  end)

  it("commits in one txn: a crash before it leaves the old, after it the new", function()
    assert.is_true(a:store("c/one", "OLD"))
    a.crash_after = 0
    assert.has_error(function() a:commit { put = { ["c/one"] = "NEW", ["c/two"] = "NEW" } } end)
    assert.equal("OLD", b:load("c/one"))
    assert.is_false(b:exists("c/two"))
    assert.same({ 0, 0 }, { b:recover() })
    a.crash_after = 1 -- the one step done: nothing left to interrupt
    assert.is_true(a:commit { put = { ["c/one"] = "NEW", ["c/two"] = "NEW" } })
    assert.equal("NEW", b:load("c/one"))
    assert.equal("NEW", b:load("c/two"))
  end)

  it("commits a put below a folder the same commit deletes as the other backends do", function()
    assert.is_true(a:store("gone/old", "x"))
    assert.is_true(a:commit { put = { ["gone/new"] = "y", ["kept/v"] = "z" }, delete = { "gone" } })
    assert.is_false(b:exists("gone"))
    assert.equal("z", b:load("kept/v"))
    local m = require("certmaint.storage.memory").new()
    assert.is_true(m:store("gone/old", "x"))
    assert.is_true(m:commit { put = { ["gone/new"] = "y", ["kept/v"] = "z" }, delete = { "gone" } })
    assert.is_false(m:exists("gone"))
  end)

  it("takes a new lease when its own expired while it held no lock", function()
    local short = etcd.new { endpoints = { server.url }, prefix = a.prefix, lock_ttl = 2 }
    local l1 = assert(short:lock("issue_cert_idle.example"))
    assert.is_true(short:unlock(l1))
    local first = short.lease
    -- idle: nobody keeps the lease alive (the engine beats only while it holds locks)
    eventually(function()
      local doc = assert(short:call("/v3/lease/timetolive", { ID = first }))
      return math.tointeger(tonumber(doc.TTL or -1)) == -1
    end)
    local l2 = assert(short:lock("issue_cert_idle.example"))
    assert.is_true(short.lease ~= first)
    assert.is_true(l2.token > l1.token)
    local _, _, code = b:lock("issue_cert_idle.example")
    assert.equal("locked", code)
    assert.is_true(short:close())
    assert.truthy(b:lock("issue_cert_idle.example")) -- close revoked the lease: free at once
  end)

  it("refuses a commit larger than one txn may be, changing nothing", function()
    local put = {}
    for i = 1, 130 do put["big/k" .. i] = "v" end
    local ok, err, code = a:commit { put = put }
    assert.is_nil(ok)
    assert.equal("toobig", code)
    assert.matches(server.url, err, 1, true)
    assert.is_false(a:exists("big"))
  end)

  it("fails over to the next endpoint and remembers it", function()
    local dead = "http://127.0.0.1:" .. etcd_helper.free_port()
    local s = etcd.new { endpoints = { dead, server.url }, prefix = a.prefix }
    assert.is_true(a:store("f/v", "V"))
    assert.equal("V", s:load("f/v"))
    assert.equal(2, s.current)
    assert.equal(1, logged("etcd_failover"))
    local before = s.requests
    assert.equal("V", s:load("f/v"))
    assert.equal(1, s.requests - before) -- straight to the one that answered
    assert.matches(server.url, s:describe(), 1, true)
    local l = assert(s:lock("issue_cert_fo.example"))
    assert.is_true(s:commit { put = { ["f/w"] = "W" }, fence = l })
    assert.is_true(s:unlock(l))
    assert.is_true(s:close())
  end)

  it("names each endpoint when none answers", function()
    local d1 = "http://127.0.0.1:" .. etcd_helper.free_port()
    local d2 = "http://127.0.0.1:" .. etcd_helper.free_port()
    local s = etcd.new { endpoints = { d1, d2 }, timeout = 2 }
    local v, err, code = s:load("k")
    assert.is_nil(v)
    assert.equal("unavailable", code)
    assert.matches("etcd " .. d1 .. ": ", err, 1, true)
    assert.matches("etcd " .. d2 .. ": ", err, 1, true)
    local _, _, c2 = s:lock("issue_cert_none.example")
    assert.equal("unavailable", c2)
    local _, _, c3 = s:commit { put = { k = "v" } }
    assert.equal("unavailable", c3)
    assert.is_false(s:exists("k"))
  end)

  it("says so clearly while etcd is stopped, and works again once it is back", function()
    local own = etcd_helper.new():start()
    local s = etcd_helper.storage(own)
    local ok, run = pcall(function()
      assert.is_true(s:store("certificates/ca/r/r.crt", "KEPT"))
      local held = assert(s:lock("issue_cert_r.example"))
      own:stop()
      local v, err, code = s:load("certificates/ca/r/r.crt")
      assert.is_nil(v)
      assert.equal("unavailable", code)
      assert.matches("^etcd " .. own.url .. ": ", err)
      local refreshed, lost = s:refresh_locks() -- cannot tell: kept for the next beat
      assert.equal(0, refreshed)
      assert.same({}, lost)
      assert.equal(1, logged("lock_refresh_failed"))
      own:start()
      assert.equal("KEPT", s:load("certificates/ca/r/r.crt"))
      assert.equal(1, (s:refresh_locks()))
      assert.is_true(s:commit { put = { ["certificates/ca/r/r.crt"] = "NEW" }, fence = held })
      assert.is_true(s:unlock(held))
      return true
    end)
    own:destroy()
    assert.is_true(ok, run)
  end)

  it("counts the requests of a renewal's storage work", function()
    local site = "certificates/ca/renew.example/renew.example"
    assert.is_true(a:commit { put = { [site .. ".crt"] = "OLD", [site .. ".key"] = "K",
      [site .. ".json"] = "{}", ["ocsp/renew.example-1"] = "S" } })
    local before = a.requests
    local lock = assert(a:lock("issue_cert_renew.example"))
    local n_lock = a.requests - before
    a:load_many { site .. ".crt", site .. ".key", site .. ".json" }
    assert.equal(1, (a:refresh_locks()))
    assert.is_true(a:commit { put = { [site .. ".crt"] = "NEW", [site .. ".key"] = "K2",
      [site .. ".json"] = "{}" }, delete = { "ocsp/renew.example-1" }, fence = lock })
    assert.is_true(a:unlock(lock))
    local total = a.requests - before
    -- lock (lease grant on first use + txn) 2, read (1 txn) 1, one heartbeat
    -- (keepalive + txn) 2, commit (1 txn, the fence a compare in it) 1, unlock (1 txn) 1
    print(string.format("\netcd requests for lock, read, heartbeat, fenced commit, unlock: %d "
      .. "(lock %d)", total, n_lock))
    assert.equal(7, total)
  end)
end)

describe("etcd storage with authentication", function()
  it("authenticates, renews an expired token, and says when the password is wrong", function()
    local own = etcd_helper.new { "--auth-token", "simple", "--auth-token-ttl", "2" }:start()
    local ok, run = pcall(function()
      local admin = etcd.new { endpoints = { own.url } }
      assert(admin:call("/v3/auth/user/add", { name = "root", password = "rootpw" }))
      assert(admin:call("/v3/auth/role/add", { name = "root" }))
      assert(admin:call("/v3/auth/user/grant", { user = "root", role = "root" }))
      assert(admin:call("/v3/auth/enable", {}))
      local _, _, code = admin:load("k")
      assert.is_not_nil(code) -- anonymous: refused now
      local s = etcd.new { endpoints = { own.url }, username = "root", password = "rootpw" }
      assert.is_true(s:store("k", "v"))
      assert.equal("v", s:load("k"))
      local l = assert(s:lock("issue_cert_auth.example"))
      -- the simple token expires after 2 s idle: the next call authenticates again
      local token = s.auth_token
      os.execute("sleep 3")
      assert.equal("v", s:load("k"))
      assert.is_true(s.auth_token ~= token)
      assert.is_true(s:commit { put = { k = "w" }, fence = l })
      assert.is_true(s:unlock(l))
      local wrong = etcd.new { endpoints = { own.url }, username = "root", password = "nope" }
      local v, err, c2 = wrong:load("k")
      assert.is_nil(v)
      assert.equal("EACCES", c2)
      assert.matches("authentication as root failed", err, 1, true)
      assert.matches(own.url, err, 1, true)
      assert.is_true(s:close())
      return true
    end)
    own:destroy()
    assert.is_true(ok, run)
  end)
end)

describe("etcd storage over TLS with a client certificate", function()
  it("talks to an https endpoint with ca_file, cert_file and key_file; refuses without them", function()
    local helpers = require "helpers.storage_backends"
    local dir = helpers.tmpdir()
    local tls = etcd_helper.make_tls(dir)
    local own = etcd_helper.new(nil, tls):start()
    local ok, run = pcall(function()
      assert.matches("^https://127%.0%.0%.1:%d+$", own.url)
      local s = etcd.new { endpoints = { own.url }, ca_file = tls.ca_file,
        cert_file = tls.client_cert, key_file = tls.client_key }
      assert.is_true(s:store("certificates/ca/t/t.crt", "OVER TLS"))
      assert.equal("OVER TLS", s:load("certificates/ca/t/t.crt"))
      local l = assert(s:lock("issue_cert_tls.example"))
      assert.is_true(s:commit { put = { ["certificates/ca/t/t.key"] = "K" }, fence = l })
      assert.is_true(s:unlock(l))
      assert.is_true(s:close())
      -- no client certificate: etcd refuses the handshake, and the error says where
      local anon = etcd.new { endpoints = { own.url }, ca_file = tls.ca_file, timeout = 3 }
      local v, err, code = anon:load("certificates/ca/t/t.crt")
      assert.is_nil(v)
      assert.is_string(code)
      assert.matches("etcd " .. own.url .. ": ", err, 1, true)
      -- not trusting etcd's CA: refused too
      local untrusting = etcd.new { endpoints = { own.url }, cert_file = tls.client_cert,
        key_file = tls.client_key, timeout = 3 }
      local v2, err2 = untrusting:load("certificates/ca/t/t.crt")
      assert.is_nil(v2)
      assert.matches("etcd " .. own.url .. ": ", err2, 1, true)
      return true
    end)
    own:destroy()
    helpers.rm_rf(dir)
    assert.is_true(ok, run)
  end)
end)

describe("the engine on etcd storage", function()
  local testing = require "certmaint.testing"
  after_each(testing.reset)

  it("obtains and renews through etcd, and says how many requests a renewal took", function()
    local server = etcd_helper.shared()
    local st = etcd_helper.storage(server)
    local clock = testing.clock(testing.EPOCH)
    local logs = testing.capture_logs()
    local policy = assert(testing.load_policy("policies/local.lua", { env = { CERTMAINT_LIFETIME = "30d" } }))
    local issuer = testing.issuer { lifetime = "30d" }
    local e = testing.engine(policy, { clock = clock, issuer = issuer, storage = st })
    local obtained = issuer.issued
    assert.is_true(obtained > 0)
    clock:advance("21d")
    local before = st.requests
    e:tick("renew")
    e:wait()
    assert.equal(2 * obtained, issuer.issued)
    local per = (st.requests - before) / obtained
    print(string.format("\netcd requests per renewal through the engine: %.1f (%d renewals)", per, obtained))
    -- what was renewed is in etcd: a second engine on the same prefix loads it, renewing nothing
    local other = require("certmaint.storage.etcd").new { endpoints = { server.url }, prefix = st.prefix }
    local issuer2 = testing.issuer { lifetime = "30d" }
    local e2 = testing.engine(policy, { clock = clock, issuer = issuer2, storage = other })
    assert.equal(0, issuer2.issued)
    assert.equal(#e:cache(), #e2:cache())
    assert.not_matches("level=error", table.concat(logs(), "\n"))
    st:close()
    other:close()
    st:delete_prefix()
  end)
end)
