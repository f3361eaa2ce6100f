-- certmaint.acme.challenges.tls_alpn01 and core.tls_alpn_*: a real handshake with
-- `openssl s_client -alpn acme-tls/1` (run by loop.exec, so the responder keeps
-- answering on the same loop), the certificate read back by `openssl x509`.
-- Only 127.0.0.1; nothing is left open.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local tls_alpn01 = require "certmaint.acme.challenges.tls_alpn01"

local LISTEN = "127.0.0.1:0"

local function run(fn, ...)
  local task = loop.spawn(fn, ...)
  assert.is_true(loop.run_until(function() return task.done end, { timeout = 30 }), "task did not finish")
  if not task.ok then error(task.error, 0) end
  return table.unpack(task.results, 1, task.results.n)
end

-- Handshake with port as a validator does; returns s_client's stdout (with the
-- server certificate's PEM) and the certificate's text (openssl x509 -text).
local function handshake(port, sni, alpn)
  local argv = { "openssl", "s_client", "-connect", "127.0.0.1:" .. port, "-servername", sni }
  if alpn then argv[#argv + 1] = "-alpn"; argv[#argv + 1] = alpn end
  local r = assert(loop.exec(argv, { stdin = "", timeout = 10 }))
  local pem = r.stdout:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-\n")
  local text
  if pem then
    text = assert(loop.exec({ "openssl", "x509", "-noout", "-text" }, { stdin = pem, timeout = 10 })).stdout
  end
  return r.stdout, text, pem
end

-- The certificate's DER holds the extension id-pe-acmeIdentifier, critical, whose
-- value is the DER OCTET STRING of SHA-256(key_authorization) (RFC 8737 section 3).
local ACME_ID_EXT = "\x06\x08\x2b\x06\x01\x05\x05\x07\x01\x1f\x01\x01\xff\x04\x22\x04\x20"
local function has_acme_identifier(pem, key_authorization)
  local der = assert(core.cert_parse(pem)).der
  return der:find(ACME_ID_EXT .. core.digest("sha256", key_authorization), 1, true) ~= nil
end

describe("tls_alpn01 solver", function()
  before_each(function()
    core.log_config { capture = true, echo = false }
    core.log_take()
  end)

  after_each(function()
    core.log_config { capture = false, echo = true }
    core.log_take()
    assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
  end)

  it("answers acme-tls/1 with the challenge certificate, then closes the port", function()
    local s = tls_alpn01.new({ listen = LISTEN }, {})
    local chal = { identifier = "a.test", type = "http-01", token = "tok",
      key_authorization = "tok.thumbprint-of-the-account" }
    run(function()
      assert.is_true(s:present(chal))
      local port = tls_alpn01.serving(LISTEN)
      assert.is_number(port)
      assert.matches("event=acme_tls_alpn01_listening listen=127.0.0.1:0 port=" .. port, core.log_take()[1], 1, true)
      local out, text, pem = handshake(port, "a.test", "acme-tls/1")
      assert.matches("ALPN protocol: acme%-tls/1", out)
      assert.is_string(text)
      assert.matches("DNS:a%.test\n", text)
      -- the acmeIdentifier extension: critical, an OCTET STRING of SHA-256(key authorization)
      assert.matches("1%.3%.6%.1%.5%.5%.7%.1%.31: critical", text)
      assert.truthy(has_acme_identifier(pem, chal.key_authorization))
      -- no ALPN, another ALPN, another name: no certificate
      for _, case in ipairs { { "a.test", nil }, { "a.test", "http/1.1" }, { "b.test", "acme-tls/1" } } do
        local o, t = handshake(port, case[1], case[2])
        assert.is_nil(t, o)
      end
      local st = tls_alpn01.stats(LISTEN)
      assert.equal(1, st.handshakes)
      assert.equal(3, st.refused)
      assert.is_true(s:cleanup(chal))
      assert.is_nil(tls_alpn01.serving(LISTEN))
      local closed = core.log_take()
      assert.matches("event=acme_tls_alpn01_closed handshakes=1 listen=127.0.0.1:0 refused=3 timeouts=0",
        closed[#closed], 1, true)
    end)
  end)

  it("one responder for many names; a name goes only when its last challenge is cleaned up", function()
    local s = tls_alpn01.new({ listen = LISTEN, timeout = "5s" }, {})
    local a = { identifier = "a.test", key_authorization = "ta.x" }
    local b = { identifier = "b.test", key_authorization = "tb.x" }
    local a2 = { identifier = "a.test", key_authorization = "ta2.x" } -- a second order for a.test
    run(function()
      assert.is_true(s:present(a))
      assert.is_true(s:present(b))
      local port, refs = tls_alpn01.serving(LISTEN)
      assert.equal(2, refs)
      assert.is_true(s:present(a2))
      local _, _, pem = handshake(port, "a.test", "acme-tls/1")
      assert.is_true(has_acme_identifier(pem, "ta2.x"))
      assert.is_false(has_acme_identifier(pem, "ta.x"))
      -- cleaning up the superseded order leaves the served certificate alone
      assert.is_true(s:cleanup(a))
      _, text = handshake(port, "a.test", "acme-tls/1")
      assert.is_string(text)
      assert.is_true(s:cleanup(a2))
      _, text = handshake(port, "a.test", "acme-tls/1")
      assert.is_nil(text)
      _, text = handshake(port, "b.test", "acme-tls/1")
      assert.matches("DNS:b%.test", text)
      -- a cleanup of something never presented changes nothing
      assert.is_true(s:cleanup({ identifier = "c.test", key_authorization = "x.y" }))
      assert.equal(port, (tls_alpn01.serving(LISTEN)))
      assert.is_true(s:cleanup(b))
      assert.is_nil(tls_alpn01.serving(LISTEN))
    end)
  end)

  it("an IP identifier (RFC 8738): SNI is the reverse name, the SAN the address", function()
    local s = tls_alpn01.new({ listen = LISTEN }, {})
    local chal = { identifier = "127.0.0.1", key_authorization = "t.ip" }
    run(function()
      assert.is_true(s:present(chal))
      local _, text = handshake(tls_alpn01.serving(LISTEN), "1.0.0.127.in-addr.arpa", "acme-tls/1")
      assert.matches("IP Address:127%.0%.0%.1", text)
      assert.is_true(s:cleanup(chal))
    end)
  end)

  it("refuses wildcards and bad identifiers with the name in the message", function()
    local s = tls_alpn01.new({ listen = LISTEN }, {})
    local ok, err, code = s:present({ identifier = "example.test", wildcard = true, key_authorization = "t.x" })
    assert.is_nil(ok)
    assert.equal("invalid", code)
    assert.matches("^tls%-alpn%-01 challenge for example%.test: .*dns%-01", err)
    ok, err, code = s:present({ identifier = "bad name", key_authorization = "t.x" })
    assert.is_nil(ok)
    assert.equal("invalid", code)
    assert.matches("bad name", err, 1, true)
    assert.is_nil(tls_alpn01.serving(LISTEN)) -- the failed present released the port
  end)

  it("a port in use is a clear error", function()
    local busy, port = assert(core.http_serve { listen = "127.0.0.1:0" })
    local s = tls_alpn01.new({ listen = "127.0.0.1:" .. port }, {})
    local ok, err, code = s:present({ identifier = "a.test", key_authorization = "t.x" })
    core.http_serve_close(busy)
    assert.is_nil(ok)
    assert.equal("EADDRINUSE", code)
    assert.matches("tls%-alpn%-01 challenge for a%.test: listening on 127%.0%.0%.1:" .. port, err)
  end)

  it("survives core.loop_reset: the next present opens a new responder", function()
    local s = tls_alpn01.new({ listen = LISTEN }, {})
    local chal = { identifier = "a.test", key_authorization = "t.x" }
    assert.is_true(s:present(chal))
    core.loop_reset()
    assert.is_true(s:present(chal))
    run(function()
      local _, text = handshake(tls_alpn01.serving(LISTEN), "a.test", "acme-tls/1")
      assert.matches("DNS:a%.test", text)
    end)
    assert.is_true(s:cleanup(chal))
    assert.is_true(s:cleanup(chal))
  end)

  it("checks its options at construction, naming the caller", function()
    assert.has_error(function() tls_alpn01.new({}, {}) end)
    assert.has_error(function() tls_alpn01.new({ listen = "nowhere" }, {}) end)
    assert.has_error(function() tls_alpn01.new({ listen = ":443", timeout = "soon" }, {}) end)
    assert.has_error(function() tls_alpn01.new({ listen = ":443", lisen = "x" }, {}) end)
    local ok, err = pcall(tls_alpn01.new, { listen = ":443", max_connections = 0 }, {})
    assert.is_false(ok)
    assert.matches("tls_alpn01_spec%.lua:%d+: certmaint%.acme%.challenges%.tls_alpn01: .*max_connections", err)
    assert.equal("tls-alpn-01", tls_alpn01.TYPE)
  end)
end)

describe("core.tls_alpn_*", function()
  it("serve, set, stats, close; options checked", function()
    local id, port = assert(core.tls_alpn_serve { listen = "127.0.0.1:0", timeout = 2, max_connections = 4 })
    assert.is_true(port > 0)
    assert.is_true(core.tls_alpn_set(id, "x.test", "k.t"))
    local st = core.tls_alpn_stats(id)
    assert.equal(1, st.names)
    assert.equal(0, st.connections)
    local ok, err, code = core.tls_alpn_set(id, "*.x.test", "k.t")
    assert.is_nil(ok)
    assert.equal("invalid", code)
    assert.matches("wildcards need dns%-01", err)
    assert.is_true(core.tls_alpn_unset(id, "x.test"))
    assert.is_false(core.tls_alpn_unset(id, "x.test"))
    assert.is_true(core.tls_alpn_close(id))
    assert.is_false(core.tls_alpn_close(id))
    ok, err, code = core.tls_alpn_stats(id)
    assert.is_nil(ok)
    assert.equal("ENOENT", code)
    assert.has_error(function() core.tls_alpn_serve { listen = "127.0.0.1:0", timeuot = 1 } end,
      nil)
    assert.has_error(function() core.tls_alpn_serve {} end)
    assert.has_error(function() core.tls_alpn_serve { listen = "127.0.0.1:0", max_connections = 0 } end)
    ok, err, code = core.tls_alpn_serve { listen = "127.0.0.1:0", timeout = 0 }
    assert.is_nil(ok)
    assert.equal("invalid", code)
  end)
end)
