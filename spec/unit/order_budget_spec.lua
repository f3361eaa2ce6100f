-- The order budget (issue 12, part 4 "Renewal storm"): new orders per CA
-- account under sliding-window limits, per registered domain, earliest
-- expiry first, the ledger and the back-off kept in storage across restarts.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local budget = require "certmaint.order_budget"
local public_suffix = require "certmaint.public_suffix"
local memory = require "certmaint.storage.memory"
local loop = require "certmaint.loop"
local fs = require "helpers.storage_backends"

local DAY, HOUR = 86400, 3600
local LEDGER = "certmaint/order_budget/testing/default.json"

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("certmaint.order_budget (the ledger)", function()
  local limits = { orders_per_window = 3, window = 60, per_domain = 2, per_domain_window = 600 }

  it("counts orders in a sliding window and says when the next one may go", function()
    local l = budget.new()
    for _, t in ipairs { 100, 110, 120 } do
      assert.is_true(budget.check(l, limits, t, {}))
      budget.record(l, t, {})
    end
    local ok, free, why = budget.check(l, limits, 125, {})
    assert.is_false(ok)
    assert.equal(160, free) -- the order at 100 leaves the window at 100 + 60
    assert.equal("account", why)
    assert.is_false((budget.check(l, limits, 159.9, {})))
    assert.is_true(budget.check(l, limits, 160, {}))
    budget.record(l, 160, {})
    -- now 110, 120, 160 count: the next frees when 110 leaves
    assert.equal(170, select(2, budget.check(l, limits, 161, {})))
    assert.equal(3, (budget.used(l, limits, 161)))
  end)

  it("says when n more orders fit", function()
    local l = budget.new()
    for _, t in ipairs { 100, 110, 120 } do budget.record(l, t, {}) end
    assert.equal(160, budget.account_free_at(l, limits, 125, 1))
    assert.equal(170, budget.account_free_at(l, limits, 125, 2))
    assert.equal(180, budget.account_free_at(l, limits, 125, 3))
    assert.equal(180, budget.account_free_at(l, limits, 125, 10)) -- never more than the limit
    assert.equal(165, budget.account_free_at(l, limits, 165, 1))
    assert.equal(200, budget.account_free_at(budget.new(), limits, 200, 3))
  end)

  it("limits orders per registered domain apart from the account", function()
    local l = budget.new()
    budget.record(l, 0, { "example.com" })
    budget.record(l, 10, { "example.com" })
    local ok, free, why = budget.check(l, limits, 20, { "example.com" })
    assert.is_false(ok)
    assert.equal(600, free)
    assert.equal("domain example.com", why)
    assert.is_true(budget.check(l, limits, 20, { "example.net" }))
    assert.is_true(budget.check(l, limits, 20, {})) -- a renewal not counted per domain
    assert.is_true(budget.check(l, limits, 600, { "example.com" }))
  end)

  it("prunes what no window counts, so the ledger stays bounded", function()
    local l = budget.new()
    for t = 1, 1000 do budget.record(l, t, { "d" .. (t % 7) .. ".example" }) end
    budget.prune(l, limits, 1000)
    assert.equal(60, #l.orders) -- t in (940, 1000]
    local n = 0
    for _, list in pairs(l.domains) do n = n + #list end
    assert.equal(600, n)
    budget.prune(l, limits, 5000)
    assert.same({}, l.orders)
    assert.is_nil(next(l.domains))
  end)

  it("round-trips through its stored form and refuses a corrupt one, naming what is wrong", function()
    local l = budget.record(budget.record(budget.new(), 5, { "a.example" }), 7, {})
    local back = assert(budget.decode(budget.encode(l)))
    assert.same({ 5, 7 }, back.orders)
    assert.same({ 5 }, back.domains["a.example"])
    assert.same({}, assert(budget.decode(budget.encode(budget.new()))).orders)
    local bad = {
      ["not json"] = "not a JSON object",
      ['{"version":2,"orders":[]}'] = "version 2",
      ['{"version":1,"orders":{"a":1}}'] = "orders is not a list",
      ['{"version":1,"orders":[1,"x"]}'] = "orders%[2%] is not a time",
      ['{"version":1,"orders":[],"domains":{"a.example":[true]}}'] = "domains.a.example%[1%] is not a time",
      ['{"version":1,"orders":[],"domains":3}'] = "domains is not an object",
    }
    for raw, want in pairs(bad) do
      local v, err = budget.decode(raw)
      assert.is_nil(v, raw)
      assert.matches(want, err)
    end
  end)

  it("sorts times written out of order (a clock stepped back)", function()
    local l = assert(budget.decode('{"version":1,"orders":[30,10,20]}'))
    assert.same({ 10, 20, 30 }, l.orders)
  end)
end)

describe("certmaint.public_suffix", function()
  it("falls back to the last two labels without a list", function()
    assert.equal("example.com", public_suffix.registered_domain("a.b.example.com"))
    assert.equal("example.com", public_suffix.registered_domain("*.example.com"))
    assert.equal("co.uk", public_suffix.registered_domain("shop.example.co.uk")) -- the fallback's known limit
    assert.equal("localhost", public_suffix.registered_domain("localhost"))
    assert.equal("192.0.2.1", public_suffix.registered_domain("192.0.2.1"))
    assert.equal("2001:db8::1", public_suffix.registered_domain("2001:db8::1"))
  end)

  it("follows the list's rules: longest match, wildcards, exceptions", function()
    local psl = assert(public_suffix.parse(table.concat({
      "// comment", "com", "uk", "co.uk", "*.kawasaki.jp", "!city.kawasaki.jp", "jp", "  github.io  extra", "",
    }, "\n")))
    assert.equal("example.co.uk", psl:registered_domain("a.b.example.co.uk"))
    assert.equal("example.com", psl:registered_domain("www.example.com"))
    assert.equal("x.foo.kawasaki.jp", psl:registered_domain("a.x.foo.kawasaki.jp"))
    assert.equal("city.kawasaki.jp", psl:registered_domain("www.city.kawasaki.jp"))
    assert.equal("me.github.io", psl:registered_domain("me.github.io"))
    assert.equal("co.uk", psl:registered_domain("co.uk")) -- a suffix is its own domain
    assert.equal("example.test", psl:registered_domain("a.example.test")) -- no rule: "*"
    assert.is_nil(public_suffix.parse("// only comments\n"))
  end)

  it("reads Debian's list when it is installed", function()
    local psl, err = public_suffix.load(public_suffix.DEBIAN_LIST)
    assert.is_truthy(psl, err) -- scripts/deps.sh installs the publicsuffix package
    assert.is_true(psl.count > 5000)
    assert.equal("example.co.uk", psl:registered_domain("shop.example.co.uk"))
    assert.equal("example.com", psl:registered_domain("a.example.com"))
  end)
end)

describe("the order budget in the engine", function()
  local clock, ca, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
  end)

  after_each(function() testing.reset() end)

  local function names(n, fmt)
    local out = {}
    for i = 1, n do out[i] = string.format(fmt or "n%02d.example.com", i) end
    return out
  end

  local function make(opts)
    return certmaint.policy {
      storage = opts.storage, issuer = opts.issuer, certificates = opts.certificates,
      concurrency = opts.concurrency or 2,
      order_budget = opts.order_budget or { orders_per_window = 5, window = "1h", per_domain = 1000 },
    }
  end

  local function stored_ledger(storage)
    return assert(budget.decode(assert(storage:load(LEDGER))))
  end

  it("obtains a storm of names at the budget's pace, the rest waiting, one event a pass", function()
    local storage = memory.new()
    local issuer = testing.issuer { ca = ca, lifetime = "30d" }
    local e = testing.engine(make { storage = storage, issuer = issuer, certificates = names(12) })
    assert.equal(5, issuer.issued)
    local lines = logs()
    assert.equal(1, grep(lines, "event=renewals_waiting .*waiting=7"))
    assert.equal(0, grep(lines, "level=error"))
    assert.equal(5, #stored_ledger(storage).orders)
    -- nothing more within the window, however often the pass runs
    clock:advance(30 * 60)
    local tick = e:tick("renew")
    e:wait()
    assert.equal(5, issuer.issued)
    assert.equal(7, tick.waiting)
    -- the window slides: 5 more, then the last 2
    clock:advance(30 * 60 + 1)
    e:wait() -- the ticker's wake-up for the budget (retry_due) admits them
    assert.equal(10, issuer.issued)
    clock:advance(HOUR)
    e:tick("renew")
    e:wait()
    assert.equal(12, issuer.issued)
    assert.equal(12, #e:cache())
    assert.equal(0, grep(logs(), "event=renew_failed"))
  end)

  it("spreads a storm: never more queued and running at once than the concurrency", function()
    local inner = testing.issuer { ca = ca }
    local engine, most = nil, 0
    local issuer = { ca = ca }
    function issuer.issue(_, req, ctx)
      if engine then most = math.max(most, engine.jobs:pending()) end
      return inner:issue(req, ctx)
    end
    function issuer.storage_key() return "testing" end
    function issuer.describe() return "counting testing issuer" end
    local e = testing.engine(make { storage = memory.new(), issuer = issuer, certificates = names(40),
      concurrency = 3, order_budget = { orders_per_window = 100 } }, { start = false })
    engine = e.engine
    e:start()
    assert.equal(40, inner.issued)
    assert.is_true(most >= 1)
    assert.is_true(most <= 3, "at most 3 queued and running, saw " .. most)
    -- without a budget the old way: every due certificate queued at once
    local inner2 = testing.issuer { ca = ca }
    local e2 = testing.engine(certmaint.policy { storage = memory.new(), issuer = inner2, certificates = names(40),
      concurrency = 3 }, { start = false })
    e2:start()
    assert.equal(40, inner2.issued)
  end)

  it("gives the certificates closest to expiry the budget first", function()
    local storage = memory.new()
    local issuer = testing.issuer { ca = ca, lifetime = "30d" }
    local list = names(8)
    -- stored certificates, all due, expiring on different days (n08 first)
    for i, n in ipairs(list) do
      local na = clock:now() + (i + 1) * DAY
      local leaf = ca:issue { names = { n }, not_before = na - 30 * DAY, not_after = na }
      assert(storage:store(keys.cert("testing", n), leaf.cert_pem))
      assert(storage:store(keys.private_key("testing", n), leaf.key_pem))
      assert(storage:store(keys.meta("testing", n), "{}"))
    end
    local reversed = {}
    for i = #list, 1, -1 do reversed[#reversed + 1] = list[i] end
    local e = testing.engine(make { storage = storage, issuer = issuer, certificates = reversed,
      order_budget = { orders_per_window = 3, window = "1h" } })
    e:tick("renew")
    e:wait()
    assert.equal(3, issuer.issued)
    local got = {}
    for _, n in ipairs(issuer.requests) do got[#got + 1] = n[1] end
    assert.same({ "n01.example.com", "n02.example.com", "n03.example.com" }, got)
  end)

  it("holds each registered domain to per_domain, counting new names, not renewals", function()
    local storage = memory.new()
    local issuer = testing.issuer { ca = ca, lifetime = "9d" }
    local certs = names(4, "a%d.example.com")
    for _, n in ipairs(names(4, "b%d.example.co.uk")) do certs[#certs + 1] = n end
    local e = testing.engine(make { storage = storage, issuer = issuer, certificates = certs,
      order_budget = { orders_per_window = 100, window = "1h", per_domain = 2, per_domain_window = "7d" } })
    assert.equal(4, issuer.issued) -- 2 of example.com, 2 of example.co.uk (the public suffix list)
    local l = stored_ledger(storage)
    assert.same({ "example.co.uk", "example.com" }, (function()
      local d = {}
      for k in pairs(l.domains) do d[#d + 1] = k end
      table.sort(d)
      return d
    end)())
    -- the renewals of those four are not held by per_domain (Let's Encrypt exempts them)
    clock:advance(6 * DAY)
    e:tick("renew")
    e:wait()
    assert.equal(8, issuer.issued)
    -- a week after the first orders the other four may be obtained
    clock:advance(DAY + 1)
    e:tick("renew")
    e:wait()
    assert.equal(12, issuer.issued)
    assert.equal(8, #e:cache())
  end)

  it("a registered_domain hook decides the domain an order counts against", function()
    local issuer = testing.issuer { ca = ca }
    testing.engine(make { storage = memory.new(), issuer = issuer, certificates = names(6),
      order_budget = { orders_per_window = 100, per_domain = 2,
        registered_domain = function(name) return name:match("^n0[1-3]") and "low" or "high" end } })
    assert.equal(4, issuer.issued)
  end)

  it("keeps the budget across a restart (file storage)", function()
    local dir = fs.tmpdir()
    local function policy(issuer)
      return make { storage = certmaint.storage.file { root = dir }, issuer = issuer, certificates = names(8) }
    end
    local first = testing.issuer { ca = ca }
    testing.engine(policy(first))
    assert.equal(5, first.issued)
    testing.reset() -- the process stops
    clock = testing.clock(testing.EPOCH + 10 * 60)
    local second = testing.issuer { ca = ca }
    local e = testing.engine(policy(second))
    assert.equal(0, second.issued) -- the 5 orders of ten minutes ago still count
    clock:advance(50 * 60)
    e:tick("renew")
    e:wait()
    assert.equal(3, second.issued)
  end)

  it("shares one budget between two instances on one storage", function()
    local shared = memory.new()
    local a_issuer, b_issuer = testing.issuer { ca = ca }, testing.issuer { ca = ca }
    local a = testing.engine(make { storage = shared, issuer = a_issuer, certificates = names(4) })
    local b = testing.engine(make { storage = memory.new { share = shared }, issuer = b_issuer,
      certificates = names(4, "m%02d.example.com") })
    assert.equal(4, a_issuer.issued)
    assert.equal(1, b_issuer.issued) -- 4 + 1 = the budget of 5
    assert.is_truthy(a and b)
  end)

  it("an order that finds the budget taken meanwhile waits for it, not fails (renewal_deferred)", function()
    local task = require "helpers.loop_task"
    local storage = memory.new()
    local issuer = testing.issuer { ca = ca }
    local e = testing.engine(make { storage = storage, issuer = issuer, certificates = names(2) })
    assert.equal(2, issuer.issued)
    -- another instance on the storage took the rest of the window meanwhile
    local l = stored_ledger(storage)
    for _ = 1, 3 do budget.record(l, core.now(), {}) end
    assert(storage:store(LEDGER, budget.encode(l)))
    local entry = e.engine.entries["n01.example.com"]
    local res, err, code = task.run(function() return e.engine:renew_once(entry, "renew") end)
    assert.is_nil(res)
    assert.equal("order_budget", code)
    assert.equal(core.now() + HOUR, err.retry_after)
    assert.matches("order budget of testing issuer .* used up %(account%)", err.message)
    assert.equal(2, issuer.issued)
    -- a slot that frees within seconds is waited for inside the job
    -- (n01's own attempt is held back by the retry_after it was given)
    clock:advance(HOUR - 5)
    logs() -- drained: what follows is counted alone
    local other = e.engine.entries["n02.example.com"]
    local t = loop.spawn(function() return e.engine:renew_once(other, "renew") end)
    loop.run_until_idle()
    assert.is_false(t.done) -- sleeping in its job until the slot frees
    assert.equal(2, issuer.issued)
    clock:advance(5)
    assert.is_true(loop.run_until(function() return t.done end, { timeout = 5 }))
    assert.equal(3, issuer.issued)
    assert.equal("renewed", t.results[1])
    assert.is_true(core.now() >= testing.EPOCH + HOUR)
    -- a job that meets it logs renewal_deferred (info), never renew_failed
    l = stored_ledger(storage)
    for _ = 1, 5 do budget.record(l, core.now(), {}) end
    assert(storage:store(LEDGER, budget.encode(l)))
    e.engine:submit(entry, "renew")
    e:wait()
    local lines = logs()
    assert.equal(1, grep(lines, "level=info event=renewal_deferred .*name=n01.example.com"))
    assert.equal(0, grep(lines, "event=renew_failed"))
    assert.equal(3, issuer.issued)
  end)

  it("rebuilds a corrupt ledger from the certificates issued in the window, with an error event", function()
    local storage = memory.new()
    local issuer = testing.issuer { ca = ca }
    local e = testing.engine(make { storage = storage, issuer = issuer, certificates = names(3) })
    assert.equal(3, issuer.issued)
    assert(storage:store(LEDGER, '{"version":1,"orders":[tru'))
    e.engine.policy.certificates[#e.engine.policy.certificates + 1] = nil
    for _, n in ipairs(names(4, "x%02d.example.com")) do e.engine:manage(n) end
    e:wait()
    -- the 3 certificates issued in the window count: 2 of the 4 new names fit
    assert.equal(5, issuer.issued)
    local lines = logs()
    assert.equal(1, grep(lines, "level=error event=order_budget_ledger_corrupt"))
    assert.equal('{"version":1,"orders":[tru', storage:load(LEDGER .. ".corrupt"))
    assert.equal(5, #stored_ledger(storage).orders)
  end)

  it("applies no budget to a non-ACME issuer unless the policy names one", function()
    local issuer = testing.issuer { ca = ca }
    local storage = memory.new()
    testing.engine(certmaint.policy { storage = storage, issuer = issuer, certificates = names(400) })
    assert.equal(400, issuer.issued)
    assert.is_false(storage:exists(LEDGER))
  end)

  it("is off with enabled = false", function()
    local issuer = testing.issuer { ca = ca }
    testing.engine(make { storage = memory.new(), issuer = issuer, certificates = names(9),
      order_budget = { enabled = false, orders_per_window = 1 } })
    assert.equal(9, issuer.issued)
  end)

  it("policy: names a wrong order_budget field", function()
    local ok, err = pcall(certmaint.policy, { certificates = { "a.example" }, order_budget = { orders_per_widnow = 3 } })
    assert.is_false(ok)
    assert.matches("order_budget.orders_per_widnow", tostring(err))
    ok, err = pcall(certmaint.policy, { certificates = { "a.example" }, order_budget = { window = "soon" } })
    assert.is_false(ok)
    assert.matches("order_budget.window", tostring(err))
  end)
end)

describe("the back-off across a restart", function()
  local clock, ca

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
  end)

  after_each(function() testing.reset() end)

  it("a failing renewal keeps its next attempt and its place in the back-off", function()
    local dir = fs.tmpdir()
    local function policy(issuer)
      return certmaint.policy { storage = certmaint.storage.file { root = dir }, issuer = issuer,
        certificates = { "fail.example.com" } }
    end
    local first = testing.issuer { ca = ca, fail = 100 }
    local e = testing.engine(policy(first))
    for _ = 1, 3 do -- attempts 1-3: back-off 1m, 2m, 2m
      local st = e.engine.jobs:status("renew:fail.example.com")
      clock:set(st.next_attempt)
      e:wait()
    end
    assert.equal(4, first.calls)
    local saved = e.engine.jobs:status("renew:fail.example.com")
    assert.equal(4, saved.attempts)
    assert.equal(300, saved.next_attempt - core.now()) -- the 4th interval: 5m
    testing.reset()
    clock = testing.clock(testing.EPOCH + 60) -- restarted a few seconds later
    local second = testing.issuer { ca = ca, fail = 100 }
    local e2 = testing.engine(policy(second))
    assert.equal(0, second.calls) -- not retried at start-up
    local st = e2.engine.jobs:status("renew:fail.example.com")
    assert.equal("waiting", st.state)
    assert.equal(saved.next_attempt, st.next_attempt)
    e2:tick("renew")
    e2:wait()
    assert.equal(0, second.calls)
    clock:set(saved.next_attempt)
    e2:wait()
    assert.equal(1, second.calls)
    -- the 5th interval of the back-off (10m), not the first (1m)
    local after = e2.engine.jobs:status("renew:fail.example.com")
    assert.equal(5, after.attempts)
    assert.equal(600, after.next_attempt - core.now())
  end)
end)
