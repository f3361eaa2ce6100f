-- certmaint.metrics: the Prometheus text exposition of an engine (label
-- escaping, # HELP/# TYPE for every family, bounded labels), the policy's
-- metrics record (loopback only unless allowed), and the endpoint served
-- from the loop (GET /metrics, 404/405/413 otherwise).
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local metrics = require "certmaint.metrics"

-- The exposition parsed: families (name -> {type, help}) and samples (a list
-- of {name, labels = {k = v}, value}); raises on a line the format forbids.
local function parse(text)
  assert.equal("\n", text:sub(-1), "the exposition ends in a newline")
  local families, samples, order = {}, {}, {}
  for line in text:gmatch("([^\n]*)\n") do
    local kind, name, rest = line:match("^# (%u+) ([%w_:]+) (.*)$")
    if kind == "HELP" then
      families[name] = families[name] or {}
      families[name].help = rest
    elseif kind == "TYPE" then
      assert.is_nil(families[name] and families[name].type, "one TYPE line for " .. name)
      families[name] = families[name] or {}
      families[name].type = rest
      order[#order + 1] = name
    else
      local sname, labels, value = line:match("^([%a_:][%w_:]*){(.*)} (%S+)$")
      if not sname then sname, value = line:match("^([%a_:][%w_:]*) (%S+)$") end
      assert.is_truthy(sname, "not a sample line: " .. line)
      local l = {}
      if labels then
        -- label="value" pairs, value with \\ \" \n escapes
        local pos = 1
        while pos <= #labels do
          local k, after = labels:match('^([%a_][%w_]*)="()', pos)
          assert.is_truthy(k, "bad labels: " .. labels)
          local v, i = {}, after
          while true do
            local ch = labels:sub(i, i)
            assert.is_true(ch ~= "" and ch ~= "\n", "unterminated label value in " .. line)
            if ch == "\\" then
              local nx = labels:sub(i + 1, i + 1)
              assert.is_truthy(({ ["\\"] = 1, ['"'] = 1, n = 1 })[nx], "bad escape in " .. line)
              v[#v + 1] = nx == "n" and "\n" or nx
              i = i + 2
            elseif ch == '"' then
              break
            else
              v[#v + 1] = ch
              i = i + 1
            end
          end
          l[k] = table.concat(v)
          pos = i + 1
          if labels:sub(pos, pos) == "," then pos = pos + 1 end
        end
      end
      assert.is_truthy(tonumber(value) or value == "+Inf" or value == "-Inf" or value == "NaN", "bad value " .. value)
      samples[#samples + 1] = { name = sname, labels = l, value = tonumber(value) or value }
    end
  end
  return families, samples, order
end

-- The family a sample belongs to (histogram and summary suffixes stripped).
local function family_of(families, name)
  if families[name] then return name end
  for _, suffix in ipairs { "_bucket", "_sum", "_count" } do
    local base = name:sub(1, -#suffix - 1)
    if name:sub(-#suffix) == suffix and families[base] then return base end
  end
  return nil
end

local function find(samples, name, labels)
  local out = {}
  for _, s in ipairs(samples) do
    if s.name == name then
      local match = true
      for k, v in pairs(labels or {}) do if s.labels[k] ~= v then match = false end end
      if match then out[#out + 1] = s end
    end
  end
  return out
end

describe("certmaint.metrics", function()
  local clock, ca

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
    metrics.reset()
  end)

  after_each(function()
    testing.reset()
    metrics.reset()
    assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
  end)

  describe("escape", function()
    it("escapes backslash, double quote and newline, and nothing else", function()
      assert.equal([[a\\b\"c\nd]], metrics.escape('a\\b"c\nd'))
      assert.equal("CN=R3, O=Let's Encrypt", metrics.escape("CN=R3, O=Let's Encrypt"))
      assert.equal("x{y}=z,", metrics.escape("x{y}=z,"))
    end)
  end)

  describe("value", function()
    it("writes integers whole, infinities as +Inf/-Inf, and floats exactly", function()
      assert.equal("1700000000", metrics.value(1700000000))
      assert.equal("1700000000", metrics.value(1700000000.0))
      assert.equal("+Inf", metrics.value(math.huge))
      assert.equal("-Inf", metrics.value(-math.huge))
      assert.equal(0.25, tonumber(metrics.value(0.25)))
      assert.equal(1/3, tonumber(metrics.value(1/3)))
    end)
  end)

  describe("render", function()
    local function engine(fields)
      fields.issuer = fields.issuer or testing.issuer { ca = ca, lifetime = "30d", ocsp_url = "http://ocsp.test/" }
      return testing.engine(certmaint.policy(fields))
    end

    it("gives every sample a family with # HELP and # TYPE, and the certificates' facts", function()
      local e = engine { certificates = { "a.example", { "b.example", "www.b.example" } } }
      e:tick("renew")
      e:tick("ocsp")
      local families, samples = parse(e.engine:metrics_text())
      for name, f in pairs(families) do
        assert.is_truthy(f.help and f.help ~= "", name .. " has a HELP line")
        assert.is_truthy(({ gauge = 1, counter = 1, histogram = 1, summary = 1 })[f.type], name .. ": type " .. tostring(f.type))
        assert.is_truthy(name:match("^certmaint_[a-z_]+$"), name)
        if f.type == "counter" then assert.is_truthy(name:match("_total$"), name .. ": a counter ends in _total") end
      end
      for _, s in ipairs(samples) do
        assert.is_truthy(family_of(families, s.name), s.name .. " belongs to a family")
      end
      assert.equal(2, find(samples, "certmaint_certificates")[1].value)
      for _, name in ipairs { "a.example", "b.example" } do
        local c = e:cert(name)
        local exp = find(samples, "certmaint_certificate_expiry_timestamp_seconds", { name = name })
        assert.equal(1, #exp)
        assert.equal(c.not_after, exp[1].value)
        assert.equal(c.issuer, exp[1].labels.issuer)
        local due = find(samples, "certmaint_certificate_renewal_due_timestamp_seconds", { name = name })
        assert.is_true(due[1].value > c.not_before and due[1].value < c.not_after)
        local staple = find(samples, "certmaint_certificate_ocsp_next_update_timestamp_seconds", { name = name })
        assert.equal(c.ocsp.next_update, staple[1].value)
        assert.equal(1, find(samples, "certmaint_certificate_last_renewal_success", { name = name })[1].value)
      end
      -- one pass of each kind run: counted, with the renew pass's counts
      local renews = find(samples, "certmaint_pass_duration_seconds_count", { kind = "renew" })[1].value
      assert.is_true(renews >= 1)
      assert.is_true(find(samples, "certmaint_pass_duration_seconds_count", { kind = "ocsp" })[1].value >= 1)
      assert.equal(0, #find(samples, "certmaint_pass_duration_seconds_count", { kind = "clean" }))
      e:tick("renew")
      e:tick("clean")
      local _, after = parse(e.engine:metrics_text())
      assert.equal(renews + 1, find(after, "certmaint_pass_duration_seconds_count", { kind = "renew" })[1].value)
      assert.equal(1, find(after, "certmaint_pass_duration_seconds_count", { kind = "clean" })[1].value)
      assert.equal(0, find(samples, "certmaint_pass_last_count", { kind = "renew", count = "failed" })[1].value)
      assert.is_true(find(samples, "certmaint_lua_memory_bytes")[1].value > 100000)
    end)

    it("keeps the per-certificate label set to name and issuer, with odd issuers escaped", function()
      local e = engine { certificates = { "a.example" } }
      local id = e.engine.entries["a.example"].id
      -- a fixed, hostile issuer text as the cache would hold it
      local facts = e.engine.cache.facts
      local cache = setmetatable({ facts = function(self, i)
        local r = { facts(e.engine.cache, i) }
        r[1] = 'CN=evil",x="1\\\n'
        return table.unpack(r, 1, 11)
      end, count = function() return e.engine.cache:count() end }, {})
      local view = setmetatable({ cache = cache }, { __index = e.engine })
      local families, samples = parse(metrics.render(view))
      local n = 0
      for _, s in ipairs(samples) do
        if s.name:find("^certmaint_certificate_") then
          n = n + 1
          local keys = {}
          for k in pairs(s.labels) do keys[#keys + 1] = k end
          table.sort(keys)
          assert.same({ "issuer", "name" }, keys)
          assert.equal('CN=evil",x="1\\\n', s.labels.issuer)
        end
      end
      assert.is_true(n >= 4)
      assert.is_truthy(id)
      assert.is_truthy(families.certmaint_certificate_expiry_timestamp_seconds)
    end)

    it("counts a failing renewal: success 0, failures growing, and the pass's failed count", function()
      local issuer = testing.issuer { ca = ca, lifetime = "30d", fail = 100 }
      local e = testing.engine(certmaint.policy { issuer = issuer, certificates = { "a.example" } })
      e:tick("renew")
      local _, samples = parse(e.engine:metrics_text())
      -- no certificate at all: the entry still shows its attempts
      assert.equal(0, find(samples, "certmaint_certificate_last_renewal_success", { name = "a.example" })[1].value)
      assert.is_true(find(samples, "certmaint_certificate_renewal_failures", { name = "a.example" })[1].value >= 1)
      assert.equal(0, #find(samples, "certmaint_certificate_expiry_timestamp_seconds", { name = "a.example" }))
    end)

    it("shows the CA's ARI window, and the renewal due time inside it", function()
      local DAY = 86400
      local iss = testing.issuer { ca = ca, lifetime = "90d", ari = function(cert)
        return { start = cert.not_before + 40 * DAY, ["end"] = cert.not_before + 45 * DAY }
      end }
      local e = testing.engine(certmaint.policy { issuer = iss, certificates = { "a.example" } })
      local c = e:cert("a.example")
      local _, samples = parse(e.engine:metrics_text())
      local l = { name = "a.example" }
      assert.equal(c.not_before + 40 * DAY, find(samples, "certmaint_certificate_ari_window_start_timestamp_seconds", l)[1].value)
      assert.equal(c.not_before + 45 * DAY, find(samples, "certmaint_certificate_ari_window_end_timestamp_seconds", l)[1].value)
      assert.equal(math.floor(c.renew_at), find(samples, "certmaint_certificate_renewal_due_timestamp_seconds", l)[1].value)
    end)

    it("counts waits for a lock another instance holds, by how they ended", function()
      local storage = testing.memory()
      local other = require("certmaint.storage.memory").new { share = storage }
      local e = testing.engine(certmaint.policy { issuer = testing.issuer { ca = ca, lifetime = "30d" },
        storage = storage, certificates = { "a.example" }, lock_wait = 1 })
      local tasks = require "helpers.loop_task"
      local held = tasks.run(function() return assert(other:lock("metrics-spec")) end)
      local waiting = loop.spawn(function() return e.engine:take_lock("metrics-spec") end)
      loop.run_until_idle()
      assert.is_false(waiting.done)
      for _ = 1, 10 do -- the fake clock past lock_wait, a poll at a time
        clock:advance(0.5)
        loop.run_until_idle()
      end
      assert.is_true(waiting.done)
      local got, _, code = table.unpack(waiting.results, 1, 3)
      assert.is_nil(got)
      assert.equal("lock_wait_timeout", code)
      tasks.run(function() return other:unlock(held) end)
      local lock = tasks.run(function() return e.engine:take_lock("metrics-spec") end) -- free: no wait
      tasks.run(function() return e.engine:release_lock(lock) end)
      local _, samples = parse(e.engine:metrics_text())
      assert.equal(1, find(samples, "certmaint_lock_waits_total", { result = "timeout" })[1].value)
      assert.equal(0, find(samples, "certmaint_lock_waits_total", { result = "acquired" })[1].value)
      assert.equal(1, find(samples, "certmaint_lock_wait_seconds_count")[1].value)
      assert.is_true(find(samples, "certmaint_lock_wait_seconds_sum")[1].value >= 1)
      assert.equal(0, find(samples, "certmaint_locks_held")[1].value)
    end)

    it("renders ACME requests as a histogram whose labels take only known values", function()
      metrics.acme_request("acme.order", metrics.acme_result(201), 0.2)
      metrics.acme_request("acme.order", metrics.acme_result(201), 3)
      metrics.acme_request("acme.nonce", metrics.acme_result(nil), 0.01)
      metrics.acme_request("acme.something-new", metrics.acme_result(500), 1)
      metrics.acme_request(nil, metrics.acme_result(404), 1)
      local e = engine { certificates = { "a.example" } }
      local families, samples = parse(e.engine:metrics_text())
      assert.equal("histogram", families.certmaint_acme_request_duration_seconds.type)
      local name = "certmaint_acme_request_duration_seconds"
      local order = { type = "order", result = "2xx" }
      assert.equal(2, find(samples, name .. "_count", order)[1].value)
      assert.equal(3.2, find(samples, name .. "_sum", order)[1].value)
      local b = {}
      for _, s in ipairs(find(samples, name .. "_bucket", order)) do b[s.labels.le] = s.value end
      assert.equal(0, b["0.1"])
      assert.equal(1, b["0.25"])
      assert.equal(1, b["2.5"])
      assert.equal(2, b["5"])
      assert.equal(2, b["+Inf"])
      assert.equal(1, find(samples, name .. "_count", { type = "nonce", result = "network" })[1].value)
      -- unknown request types fold into "other"
      assert.equal(1, find(samples, name .. "_count", { type = "other", result = "5xx" })[1].value)
      assert.equal(1, find(samples, name .. "_count", { type = "other", result = "4xx" })[1].value)
      for _, s in ipairs(samples) do
        if s.name:find("^" .. name) then
          assert.is_truthy(metrics.ACME_TYPES[s.labels.type] or s.labels.type == "other", s.labels.type)
          assert.is_truthy(s.labels.result:match("^[1-5]xx$") or s.labels.result == "network")
        end
      end
    end)
  end)

  describe("documentation", function()
    it("README's Metrics section names every family an engine renders", function()
      local f = assert(io.open((os.getenv("CERTMAINT_SOURCE_DIR") or ".") .. "/README.md"))
      local readme = f:read("a")
      f:close()
      local section = assert(readme:match("\n### Metrics\n(.-)\n### "), "README.md has a Metrics section")
      local e = testing.engine(certmaint.policy { issuer = testing.issuer { ca = ca, lifetime = "30d" },
        certificates = { "a.example" } })
      local families = parse(e.engine:metrics_text())
      local n = 0
      for name in pairs(families) do
        n = n + 1
        assert.is_truthy(section:find("`" .. name .. "[`{]"), "README's Metrics section does not name " .. name)
      end
      assert.is_true(n >= 20)
    end)
  end)

  describe("the policy's metrics record", function()
    local function policy(m)
      return certmaint.policy { certificates = { "a.example" }, metrics = m }
    end

    it("takes loopback listen addresses and a textfile", function()
      for _, addr in ipairs { "127.0.0.1:9464", "127.0.0.53:1", "[::1]:9464", "localhost:9464" } do
        assert.equal(addr, policy({ listen = addr }).metrics.listen)
      end
      assert.equal("/x/certmaint.prom", policy({ textfile = "/x/certmaint.prom" }).metrics.textfile)
      assert.is_nil(certmaint.policy { certificates = { "a.example" } }.metrics)
    end)

    it("refuses a non-loopback address naming metrics.listen, unless allow_remote", function()
      for _, addr in ipairs { "0.0.0.0:9464", ":9464", "*:9464", "10.0.0.1:9464", "[::]:9464", "128.0.0.1:80" } do
        local ok, err = pcall(policy, { listen = addr })
        assert.is_false(ok, addr)
        assert.matches('metrics.listen', tostring(err), 1, true)
        assert.matches("not a loopback address", tostring(err), 1, true)
        assert.equal(addr, policy({ listen = addr, allow_remote = true }).metrics.listen)
      end
    end)

    it("refuses what is not HOST:PORT, and unknown fields", function()
      for _, bad in ipairs { "127.0.0.1", 9464, "127.0.0.1:99999", "" } do
        local ok, err = pcall(policy, { listen = bad })
        assert.is_false(ok)
        assert.matches("metrics.listen", tostring(err), 1, true)
      end
      local ok, err = pcall(policy, { listn = "127.0.0.1:1" })
      assert.is_false(ok)
      assert.matches("metrics.listn", tostring(err), 1, true)
    end)
  end)

  describe("the endpoint", function()
    -- one HTTP exchange with the loop's server, driven from a loop task
    local function fetch(port, method, path, body)
      local task = loop.spawn(function()
        return loop.http { url = "http://127.0.0.1:" .. port .. path, method = method, body = body, timeout = 5 }
      end)
      loop.run_until(function() return task.done end, { timeout = 10 })
      assert.is_true(task.done and task.ok, tostring(task.error))
      return task.results[1], task.results[2]
    end

    it("answers GET /metrics with the exposition, 404 elsewhere, 405 for POST and closes on reload drop", function()
      local e = testing.engine(certmaint.policy { issuer = testing.issuer { ca = ca, lifetime = "30d" },
        certificates = { "a.example" }, metrics = { listen = "127.0.0.1:0" } })
      assert.is_true(e.engine:metrics_serve())
      local port = e.engine.metrics_server.port
      local r = fetch(port, "GET", "/metrics")
      assert.equal(200, r.status)
      assert.equal(metrics.CONTENT_TYPE, r.headers["content-type"])
      local _, samples = parse(r.body)
      assert.equal(1, find(samples, "certmaint_certificates")[1].value)
      assert.equal(404, fetch(port, "GET", "/").status)
      assert.equal(404, fetch(port, "GET", "/metrics/x").status)
      assert.equal(405, fetch(port, "DELETE", "/metrics").status)
      -- a body is never read: 413 before the handler sees it
      assert.equal(413, fetch(port, "POST", "/metrics", "x=1").status)
      e.engine:metrics_close()
      assert.is_nil(e.engine.metrics_server)
    end)
  end)
end)
