-- ACME Renewal Information (RFC 9773) in the engine, driven through
-- certmaint.testing's issuer: the window is fetched as background work, kept
-- in the certificate's .json (certmagic's issuer_data.renewal_info), decides
-- the renewal time through certmaint.renewal's ARI layer, honours the CA's
-- Retry-After for the next fetch, and a window in the past renews at once.
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"

local DAY = 86400

local function helpers_read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function grep(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

describe("ARI in the engine", function()
  local clock, ca, logs

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    logs = testing.capture_logs()
  end)

  after_each(testing.reset)

  local function policy(fields)
    fields.certificates = fields.certificates or { "example.com" }
    return certmaint.policy(fields)
  end

  -- a window at days [a, b] of each certificate's life
  local function window(a, b)
    return function(cert) return { start = cert.not_before + a * DAY, ["end"] = cert.not_before + b * DAY } end
  end

  local function meta(storage, name)
    return core.json_decode(assert(storage:load(keys.meta("testing", name))))
  end

  it("fetches the window after start-up, stores it as certmagic does, and renews inside it", function()
    local iss = testing.issuer { ca = ca, ari = window(40, 45) }
    local storage = testing.memory()
    local e = testing.engine(policy { issuer = iss, storage = storage })
    assert.equal(1, iss.issued)
    assert.equal(1, iss.ari_calls)
    local cert = e:cert("example.com")
    local at = cert.renew_at
    assert.is_true(at >= cert.not_before + 40 * DAY and at <= cert.not_before + 45 * DAY, rfc3339.iso(at))
    assert.equal(core.ari_point({ start = cert.not_before + 40 * DAY, ["end"] = cert.not_before + 45 * DAY },
      cert.serial), at)
    local ri = meta(storage, "example.com").issuer_data.renewal_info
    assert.equal(rfc3339.iso(cert.not_before + 40 * DAY), ri.suggestedWindow.start)
    assert.equal(rfc3339.iso(cert.not_before + 45 * DAY), ri.suggestedWindow["end"])
    assert.equal(rfc3339.iso(at), ri._selectedTime)
    assert.is_string(ri._retryAfter)
    -- status shows the ARI time, in rows and in --json
    local row = e:status_rows(core.now())[1]
    assert.equal(at, row.renewal_at)
    assert.is_false(row.renewal_due)
    local function json_row(now)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      assert(e.engine:status_json(now, f))
      f:close()
      local rows = core.json_decode(helpers_read(path))
      os.remove(path)
      return rows[1]
    end
    local j = json_row(core.now())
    assert.equal(rfc3339.iso(at), j.renewal_at)
    assert.is_false(j.renewal_due)
    assert.is_true(json_row(at + 1).renewal_due) -- the C default rule alone would say false until day 60
    clock:set(at - 1)
    e:tick("renew")
    assert.equal(1, iss.issued)
    clock:set(at + 1)
    assert.is_true(e:status_rows(core.now())[1].renewal_due)
    e:tick("renew")
    assert.equal(2, iss.issued) -- at day ~40-45, well before the 1/3 rule's day 60
  end)

  it("applies the kept window again after a reload of storage (SIGHUP runs start again)", function()
    local iss = testing.issuer { ca = ca, ari = window(40, 45), ari_retry_after = "1d" }
    local e = testing.engine(policy { issuer = iss })
    local at = e:cert("example.com").renew_at
    assert.is_true(at < e:cert("example.com").not_before + 46 * DAY)
    e:start() -- load_all computes the default rule's renew_at again
    assert.equal(at, e:cert("example.com").renew_at)
    assert.equal(1, iss.ari_calls) -- from memory: nothing fetched before its Retry-After
  end)

  it("lets a window later than the default ratio decide, under the emergency floor", function()
    local iss = testing.issuer { ca = ca, ari = window(80, 88) }
    local e = testing.engine(policy { issuer = iss })
    local nb = e:cert("example.com").not_before
    clock:set(nb + 61 * DAY)
    e:tick("renew")
    assert.equal(1, iss.issued) -- the default 1/3 rule yields to the CA's window
    clock:set(nb + 85.5 * DAY + 1) -- the last 1/20 of 90 days: never later than that
    e:tick("renew")
    assert.equal(2, iss.issued)
  end)

  it("renews at once when the window is in the past (how a CA says: replace it now)", function()
    local first
    local iss = testing.issuer { ca = ca, ari = function(cert, now)
      first = first or cert.serial
      if cert.serial == first then return "past" end
      return { start = cert.not_before + 50 * DAY, ["end"] = cert.not_before + 55 * DAY }
    end }
    local e = testing.engine(policy { issuer = iss })
    assert.equal(2, iss.issued) -- obtained, then replaced at start-up, no pass needed
    assert.are_not.equal(first, e:cert("example.com").serial)
    assert.equal(1, grep(logs(), "event=renewed "))
    e:tick("renew")
    assert.equal(2, iss.issued) -- the new one has a window in the future
  end)

  it("sends replaces (the old certificate's ARI ID) with the renewal, to the issuer that issued it", function()
    local iss = testing.issuer { ca = ca, ari = window(40, 45), lifetime = "90d" }
    local e = testing.engine(policy { issuer = iss })
    local old = e:cert("example.com")
    assert.is_nil(iss.reqs[1].replaces)
    clock:advance("46d")
    e:tick("renew")
    assert.equal(2, iss.issued)
    assert.equal(core.ari_cert_id(old.pem), iss.reqs[2].replaces)
  end)

  it("renews anyway when the CA answers alreadyReplaced (the order retried without replaces)", function()
    local iss = testing.issuer { ca = ca, ari = window(40, 45) }
    local e = testing.engine(policy { issuer = iss })
    iss:already_replaced(1)
    clock:advance("46d")
    e:tick("renew")
    assert.equal(2, iss.issued)
    assert.is_true(iss.reqs[2].replaces_refused)
    assert.is_string(iss.reqs[2].replaces)
    assert.equal(0, grep(logs(), "event=renew_failed"))
  end)

  it("asks again no earlier than the CA's Retry-After, and keeps a stored window across a restart", function()
    local iss = testing.issuer { ca = ca, ari = window(40, 45), ari_retry_after = "3h" }
    local storage = testing.memory()
    local e = testing.engine(policy { issuer = iss, storage = storage, renew_check_interval = "1h" })
    assert.equal(1, iss.ari_calls)
    clock:advance("2h")
    e:tick("renew")
    assert.equal(1, iss.ari_calls)
    clock:advance("1h1s")
    e:tick("renew")
    assert.equal(2, iss.ari_calls)
    local at = e:cert("example.com").renew_at
    -- a restart reads the window from the .json: nothing fetched before its retry time
    local iss2 = testing.issuer { ca = ca, ari = window(10, 11) }
    local e2 = testing.engine(policy { issuer = iss2, storage = storage })
    assert.equal(0, iss2.ari_calls)
    assert.equal(at, e2:cert("example.com").renew_at)
    -- status and check read it too, asking nothing
    local rows = e2:status_rows(core.now())
    assert.equal(at, rows[1].renewal_at)
    clock:advance("3h")
    e2:tick("renew")
    assert.equal(1, iss2.ari_calls) -- due: the new window (days 10-11) now decides
    assert.is_true(e2:cert("example.com").renew_at <= e2:cert("example.com").not_before + 11 * DAY)
  end)

  it("gives a needs_renewal hook the window as cert.ari", function()
    local seen
    local iss = testing.issuer { ca = ca, ari = window(40, 45) }
    local e = testing.engine(policy { issuer = iss, needs_renewal = function(cert, now)
      seen = cert.ari
      return cert.ari ~= nil and now > cert.ari.start
    end })
    local nb = e:cert("example.com").not_before
    assert.is_table(seen)
    assert.equal(nb + 40 * DAY, seen.start)
    assert.equal(nb + 45 * DAY, seen["end"])
    clock:set(nb + 40 * DAY + 1)
    e:tick("renew")
    assert.equal(2, iss.issued)
  end)

  it("stops asking an issuer whose CA has no renewalInfo", function()
    local iss = testing.issuer { ca = ca, ari = false }
    local e = testing.engine(policy { issuer = iss })
    assert.equal(1, iss.ari_calls)
    clock:advance("7d")
    e:tick("renew")
    assert.equal(1, iss.ari_calls)
    assert.equal(1, grep(logs(), "event=ari_unsupported"))
  end)

  it("keeps the last window when a fetch fails, and tries again at the error's retry_after", function()
    local iss = testing.issuer { ca = ca, ari = window(40, 45), ari_retry_after = "1h" }
    local e = testing.engine(policy { issuer = iss, renew_check_interval = "1h" })
    local at = e:cert("example.com").renew_at
    iss:fail_ari(1, "5h")
    clock:advance("1h1s")
    e:tick("renew")
    assert.equal(2, iss.ari_calls)
    assert.equal(at, e:cert("example.com").renew_at)
    assert.equal(1, grep(logs(), "event=ari_fetch_failed"))
    clock:advance("4h")
    e:tick("renew")
    assert.equal(2, iss.ari_calls)
    clock:advance("1h")
    e:tick("renew")
    assert.equal(3, iss.ari_calls)
  end)

  it("does nothing ARI for issuers without renewal_info", function()
    local iss = testing.issuer { ca = ca }
    local e = testing.engine(policy { issuer = iss })
    assert.is_nil(iss.renewal_info)
    assert.is_false(e.engine:ari_enabled())
    assert.is_nil(next(e.engine.ari))
  end)

  it("windows follow each certificate of an issuer list to the member that issued it", function()
    local a = testing.issuer { ca = ca, name = "a", fail = 100 }
    local b = testing.issuer { ca = ca, name = "b", ari = window(30, 31) }
    local e = testing.engine(policy { issuer = { a, b } })
    assert.equal(1, b.issued)
    assert.equal(1, b.ari_calls)
    local cert = e:cert("example.com")
    assert.is_true(cert.renew_at <= cert.not_before + 31 * DAY)
  end)
end)

describe("testing.issuer for policy specs", function()
  local clock, ca

  before_each(function()
    clock = testing.clock(testing.EPOCH)
    ca = testing.ca()
    testing.capture_logs()
  end)

  after_each(testing.reset)

  it("answers rateLimited with a Retry-After on demand, and the retry waits for it", function()
    local iss = testing.issuer { ca = ca, lifetime = "30d" }
    local e = testing.engine(certmaint.policy { issuer = iss, certificates = { "example.com" } })
    iss:rate_limit(1, "2h")
    clock:advance("21d")
    e:tick("renew")
    local st = e.engine.jobs:status("renew:example.com")
    assert.equal("waiting", st.state)
    assert.matches("rateLimited", st.last_error)
    assert.equal(core.now() + 7200, st.next_attempt)
    clock:advance("1h")
    e:wait()
    assert.equal(1, iss.issued)
    clock:advance("1h1s")
    e:wait()
    assert.equal(2, iss.issued)
  end)

  it("runs the dns-01 hooks for each name and fails a named challenge type", function()
    local records = {}
    local dns01 = {
      present = function(name, value) records[name] = value return true end,
      cleanup = function(name) records[name] = nil return true end,
    }
    local iss = testing.issuer { ca = ca, challenges = { http01 = { listen = "127.0.0.1:5002" }, dns01 = dns01 },
      fail_challenge = "http-01" }
    local e = testing.engine(certmaint.policy { issuer = iss, certificates = { { "example.com", "*.example.com" } } })
    assert.equal(1, iss.issued)
    assert.is_not_nil(e:cert("example.com"))
    local types = {}
    for _, p in ipairs(iss.presented) do types[#types + 1] = p.type .. " " .. p.identifier end
    -- http-01 failed for example.com, dns-01 took over; the wildcard needs dns-01
    assert.same({ "http-01 example.com", "dns-01 example.com", "dns-01 *.example.com" }, types)
    assert.equal("_acme-challenge.example.com", iss.presented[2].name)
    assert.is_nil(next(records)) -- cleaned up
    iss:fail_challenge("dns-01")
    clock:advance("61d")
    e:tick("renew")
    local st = e.engine.jobs:status("renew:example.com")
    assert.matches('dns-01 challenge for "example.com": ', st.last_error, 1, true)
    assert.matches("acme:unauthorized", st.last_code, 1, true)
  end)

  it("refuses a wildcard when no dns-01 is configured, finally", function()
    local iss = testing.issuer { ca = ca, challenges = { http01 = {} } }
    local e = testing.engine(certmaint.policy { issuer = iss, certificates = { "*.example.com" } })
    local st = e.engine.jobs:status("renew:*.example.com")
    assert.equal("failed", st.state)
    assert.matches("a wildcard needs dns-01", st.last_error, 1, true)
  end)

  it("publishes a fixed window, and records revocations with their reason", function()
    local w = { start = testing.EPOCH + 10 * 86400, ["end"] = testing.EPOCH + 12 * 86400 }
    local iss = testing.issuer { ca = ca, ari = w }
    local e = testing.engine(certmaint.policy { issuer = iss, certificates = { "example.com" } })
    local cert = e:cert("example.com")
    assert.equal(core.ari_point(w, cert.serial), cert.renew_at)
    assert.is_true(iss:revoke(cert, { reason = 1 }))
    assert.same({ { serial = cert.serial, reason = 1 } }, iss.revoked)
  end)
end)
