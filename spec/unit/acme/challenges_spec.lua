-- The challenge solvers of H3 standalone: the storage tokens (certmagic's
-- distributed solving layout), webroot and dns-01 (policy hooks through the
-- hook runner). ACME itself is not involved: each solver gets the `chal`
-- tables the ACME flow hands it.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local hooks = require "certmaint.hooks"
local testing = require "certmaint.testing"
local keys = require "certmaint.keys"
local tokens = require "certmaint.acme.challenges.tokens"
local webroot = require "certmaint.acme.challenges.webroot"
local dns01 = require "certmaint.acme.challenges.dns01"
local helpers = require "helpers.policies"

local ISS = "127.0.0.1-14000-dir"
local THUMB = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

local function chal(id, token, extra)
  local c = { identifier = id, type = "http-01", token = token, key_authorization = token .. "." .. THUMB,
    url = "https://127.0.0.1:14000/chalZ/" .. token, wildcard = false }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

-- Run fn in a loop task until idle; returns what it returned (raises its error).
local function in_task(fn, ...)
  local task = loop.spawn(fn, ...)
  loop.run_until_idle { timeout = 30 }
  assert.is_true(task.done, "the task did not finish")
  if not task.ok then error(task.error, 0) end
  return table.unpack(task.results, 1, task.results.n)
end

local function exists(path) return core.stat(path) ~= nil end

describe("challenge tokens in storage", function()
  local store
  before_each(function() store = testing.memory() end)
  after_each(testing.reset)

  it("keeps a challenge where certmagic keeps it, as acmez's JSON", function()
    local c = chal("A.Example", "tok-1_x")
    assert.is_true(in_task(tokens.present, store, ISS, c))
    local key = "acme/" .. ISS .. "/challenge_tokens/a.example.json"
    assert.equal(key, keys.challenge_token(ISS, "A.Example"))
    local doc = core.json_decode(in_task(function() return store:load(key) end))
    assert.same({ type = "dns", value = "A.Example" }, doc.identifier)
    assert.equal("tok-1_x", doc.token)
    assert.equal("tok-1_x." .. THUMB, doc.keyAuthorization)
    assert.equal("http-01", doc.type)
    assert.equal("pending", doc.status)
    assert.equal(c.url, doc.url)
  end)

  it("names IP identifiers as certmagic does (type ip, ':' as '-')", function()
    in_task(tokens.present, store, ISS, chal("2001:db8::1", "t"))
    local text = in_task(function() return store:load("acme/" .. ISS .. "/challenge_tokens/2001-db8--1.json") end)
    assert.equal("ip", core.json_decode(text).identifier.type)
  end)

  it("reads a challenge file Caddy wrote (its field order, extra fields)", function()
    local caddy = '{"type":"http-01","url":"https://x/c/1","status":"pending","token":"abc",' ..
      '"keyAuthorization":"abc.' .. THUMB .. '","identifier":{"type":"dns","value":"c.example"}}'
    in_task(function() return store:store("acme/" .. ISS .. "/challenge_tokens/c.example.json", caddy) end)
    local got = in_task(tokens.lookup, store, { "other-ca", ISS }, "c.example:5002")
    assert.equal("abc." .. THUMB, got.key_authorization)
    assert.equal("c.example", got.identifier)
  end)

  it("answers only the stored token, for the stored host, GET or HEAD", function()
    in_task(tokens.present, store, ISS, chal("a.example", "good"))
    local function ask(method, host, path)
      return in_task(tokens.answer, store, ISS, { method = method, host = host, path = path })
    end
    assert.equal("good." .. THUMB, ask("GET", "a.example:5002", "/.well-known/acme-challenge/good"))
    assert.equal("good." .. THUMB, ask("HEAD", "A.EXAMPLE.", "/.well-known/acme-challenge/good"))
    local none, why, code = ask("GET", "a.example", "/.well-known/acme-challenge/other")
    assert.is_nil(none)
    assert.equal("ENOENT", code)
    assert.matches("another token", why)
    -- another host asking for a's token (DNS rebinding) gets nothing
    assert.is_nil(ask("GET", "b.example", "/.well-known/acme-challenge/good"))
    assert.is_nil(ask("GET", "a.example", "/.well-known/acme-challenge/../good"))
    assert.is_nil(ask("GET", "a.example", "/elsewhere/good"))
    assert.same({ nil, "method POST", "method" }, { ask("POST", "a.example", "/.well-known/acme-challenge/good") })
    assert.same({ nil, '"a/b" is not a host name', "invalid" }, { ask("GET", "a/b", "/.well-known/acme-challenge/good") })
  end)

  it("parses Host headers into identifiers", function()
    assert.equal("a.example", tokens.host_identifier("A.Example.:80"))
    assert.equal("::1", tokens.host_identifier("[::1]:5002"))
    assert.equal("127.0.0.1", tokens.host_identifier("127.0.0.1"))
    assert.is_nil(tokens.host_identifier(""))
    assert.is_nil(tokens.host_identifier("a b"))
    assert.is_nil(tokens.host_identifier(nil))
  end)

  it("cleans up its own challenge and leaves a newer one of the same identifier", function()
    in_task(tokens.present, store, ISS, chal("a.example", "first"))
    in_task(tokens.present, store, ISS, chal("a.example", "second"))
    assert.is_true(in_task(tokens.cleanup, store, ISS, chal("a.example", "first")))
    assert.equal("second", in_task(tokens.lookup, store, ISS, "a.example").token)
    assert.is_true(in_task(tokens.cleanup, store, ISS, chal("a.example", "second")))
    assert.same({ nil, "no challenge in storage for a.example", "ENOENT" },
      { in_task(tokens.lookup, store, ISS, "a.example") })
    assert.is_true(in_task(tokens.cleanup, store, ISS, chal("a.example", "second"))) -- twice is fine
  end)

  it("refuses a token that is not base64url, and a damaged file says where it is", function()
    local ok, err, code = in_task(tokens.present, store, ISS, chal("a.example", "../x"))
    assert.is_nil(ok)
    assert.equal("invalid", code)
    assert.matches("a.example", err, 1, true)
    in_task(function() return store:store("acme/" .. ISS .. "/challenge_tokens/d.example.json", "{nope") end)
    local c, derr, dcode = in_task(tokens.lookup, store, ISS, "d.example")
    assert.is_nil(c)
    assert.equal("invalid", dcode)
    assert.matches("acme/" .. ISS .. "/challenge_tokens/d.example.json", derr, 1, true)
  end)

  it("the responder serves 200 with the key authorization, 404 and 405 otherwise", function()
    in_task(tokens.present, store, ISS, chal("a.example", "tk"))
    local logs = testing.capture_logs()
    local respond = tokens.responder(store, { ISS })
    local r = in_task(respond, { method = "GET", host = "a.example", path = "/.well-known/acme-challenge/tk" })
    assert.same({ status = 200, body = "tk." .. THUMB, headers = { ["Content-Type"] = "application/octet-stream" } }, r)
    assert.matches("event=challenge_served", table.concat(logs(), "\n"), 1, true)
    assert.equal(404, in_task(respond, { method = "GET", host = "b.example", path = "/.well-known/acme-challenge/tk" }).status)
    assert.equal(405, in_task(respond, { method = "PUT", host = "a.example", path = "/.well-known/acme-challenge/tk" }).status)
  end)
end)

describe("certmaint.acme.challenges.webroot", function()
  local root, store
  before_each(function()
    root = helpers.tmpdir()
    store = testing.memory()
  end)
  after_each(function()
    os.execute("rm -rf '" .. root .. "'")
    testing.reset()
  end)

  it("has the solver interface", function()
    assert.equal("http-01", webroot.TYPE)
    assert.is_table(webroot.SCHEMA)
    local s = webroot.new(root)
    assert.is_function(s.present)
    assert.is_function(s.cleanup)
  end)

  it("writes the key authorization under .well-known/acme-challenge/, 0644, then removes it and its folders", function()
    local s = webroot.new(root, { storage = store, issuer_key = ISS })
    local c = chal("a.example", "tokA")
    assert.is_true(in_task(s.present, s, c))
    local f = root .. "/.well-known/acme-challenge/tokA"
    assert.equal("tokA." .. THUMB, helpers.read(f))
    assert.equal("0644", core.stat(f).mode)
    assert.equal("0755", core.stat(root .. "/.well-known").mode)
    -- and in storage, for an instance answering on the same storage
    assert.equal("tokA", in_task(tokens.lookup, store, ISS, "a.example").token)
    assert.is_true(in_task(s.cleanup, s, c))
    assert.is_false(exists(f))
    assert.is_false(exists(root .. "/.well-known"))
    assert.same({ nil, "no challenge in storage for a.example", "ENOENT" }, { in_task(tokens.lookup, store, ISS, "a.example") })
  end)

  it("keeps folders it did not make, and others' files, and leaves them until the last token goes", function()
    assert(core.mkdir_p(root .. "/.well-known/acme-challenge", "0750"))
    assert(core.write_atomic(root .. "/.well-known/other", "x", "0644"))
    local s = webroot.new({ dir = root .. "/", file_mode = "0640", distributed = false })
    local a, b = chal("a.example", "ta"), chal("b.example", "tb")
    assert.is_true(in_task(s.present, s, a))
    assert.is_true(in_task(s.present, s, b))
    assert.equal("0640", core.stat(root .. "/.well-known/acme-challenge/ta").mode)
    assert.is_true(in_task(s.cleanup, s, a))
    assert.equal("tb." .. THUMB, helpers.read(root .. "/.well-known/acme-challenge/tb"))
    assert.is_true(in_task(s.cleanup, s, b))
    assert.is_true(exists(root .. "/.well-known/acme-challenge"))
    assert.is_true(exists(root .. "/.well-known/other"))
  end)

  it("a folder made for tokens is not removed while another program's file is in it", function()
    local s = webroot.new(root)
    local a = chal("a.example", "ta")
    in_task(s.present, s, a)
    assert(core.write_atomic(root .. "/.well-known/acme-challenge/foreign", "x", "0644"))
    assert.is_true(in_task(s.cleanup, s, a))
    assert.is_true(exists(root .. "/.well-known/acme-challenge/foreign"))
  end)

  it("says which name and folder fail: a missing webroot is not created", function()
    local s = webroot.new(root .. "/missing")
    local ok, err, code = in_task(s.present, s, chal("a.example", "t"))
    assert.is_nil(ok)
    assert.equal("ENOENT", code)
    assert.matches('http-01 (webroot) challenge for a.example: webroot ' .. root .. '/missing does not exist', err, 1, true)
    assert.is_false(exists(root .. "/missing"))
  end)

  it("refuses a token that would leave the folder, and writes nothing", function()
    local s = webroot.new(root, { storage = store, issuer_key = ISS })
    for _, bad in ipairs { "../../etc/x", "a/b", "", "a.b", string.rep("a", 300) } do
      local ok, err, code = in_task(s.present, s, chal("a.example", bad))
      assert.is_nil(ok)
      assert.equal("invalid", code)
      assert.matches("not base64url", err, 1, true)
    end
    assert.is_false(exists(root .. "/.well-known"))
    assert.is_true(in_task(s.cleanup, s, chal("a.example", "../x")))
  end)

  it("undoes the storage token when the file cannot be written", function()
    assert(core.write_atomic(root .. "/.well-known", "a file in the way", "0644"))
    local s = webroot.new(root, { storage = store, issuer_key = ISS })
    local ok, err, code = in_task(s.present, s, chal("a.example", "t"))
    assert.is_nil(ok)
    assert.is_string(code)
    assert.matches("a.example", err, 1, true)
    assert.is_nil((in_task(tokens.lookup, store, ISS, "a.example")))
  end)

  it("checks its options, naming them", function()
    assert.has_error(function() webroot.new("relative/dir") end)
    local ok, err = pcall(webroot.new, { dir = "/x", file_mod = "0644" })
    assert.is_false(ok)
    assert.matches('unknown option "file_mod"', err, 1, true)
    ok, err = pcall(webroot.new, { dir = "/x", file_mode = "rw" })
    assert.is_false(ok)
    assert.matches("file_mode", err, 1, true)
  end)
end)

describe("certmaint.acme.challenges.dns01", function()
  local logs, saved_time
  before_each(function()
    logs = testing.capture_logs()
    saved_time = hooks.EVENT_TIME_LIMIT
  end)
  after_each(function()
    hooks.EVENT_TIME_LIMIT = saved_time
    testing.reset()
  end)

  local function dchal(id, wildcard)
    return chal(id, "dtok", { type = "dns-01", wildcard = wildcard, dns_value = "VALUE-" .. id })
  end

  it("has the solver interface", function()
    assert.equal("dns-01", dns01.TYPE)
    local s = dns01.new { present = function() end, cleanup = function() end }
    assert.is_function(s.present)
    assert.is_function(s.cleanup)
    assert.is_function(s.wait)
  end)

  it("calls present and cleanup with the record name, the value and what the challenge is", function()
    local calls = {}
    local s = dns01.new {
      present = function(name, value, info) calls[#calls + 1] = { "present", name, value, info } end,
      cleanup = function(name, value, info) calls[#calls + 1] = { "cleanup", name, value, info.wildcard } end,
    }
    assert.is_true(in_task(s.present, s, dchal("example.com", true)))
    assert.is_true(in_task(s.cleanup, s, dchal("example.com", true)))
    assert.equal("present", calls[1][1])
    assert.equal("_acme-challenge.example.com", calls[1][2])
    assert.equal("VALUE-example.com", calls[1][3])
    assert.same({ identifier = "example.com", wildcard = true, token = "dtok",
      url = "https://127.0.0.1:14000/chalZ/dtok" }, calls[1][4])
    assert.same({ "cleanup", "_acme-challenge.example.com", "VALUE-example.com", true }, calls[2])
  end)

  it("lets hooks wait in the loop (an exec), and that waiting is not running time", function()
    hooks.EVENT_TIME_LIMIT = 0.2
    local s = dns01.new {
      present = function()
        local r = assert(loop.exec({ "sleep", "0.5" }, { timeout = 5 }))
        return r.status == 0
      end,
      cleanup = function() end,
    }
    assert.is_true(in_task(s.present, s, dchal("a.example")))
  end)

  it("a raising hook is an error naming the name, the challenge and the record; it is logged", function()
    local s = dns01.new { present = function() error("provider said 403") end, cleanup = function() end }
    local ok, err, code = in_task(s.present, s, dchal("example.com", true))
    assert.is_nil(ok)
    assert.equal("hook_failed", code)
    assert.matches('dns-01 challenge for "*.example.com": present(_acme-challenge.example.com) failed: ', err, 1, true)
    assert.matches("provider said 403", err, 1, true)
    local all = table.concat(logs(), "\n")
    assert.matches("event=hook_failed", all, 1, true)
    assert.matches("hook=dns01.present", all, 1, true)
  end)

  it("a hook returning false or nil, err fails too", function()
    local s = dns01.new { present = function() return nil, "zone not found" end,
      cleanup = function() return false end }
    local ok, err = in_task(s.present, s, dchal("b.example"))
    assert.is_nil(ok)
    assert.matches('dns-01 challenge for "b.example": present(_acme-challenge.b.example) failed: zone not found', err, 1, true)
    ok, err = in_task(s.cleanup, s, dchal("b.example"))
    assert.is_nil(ok)
    assert.matches("cleanup(_acme-challenge.b.example) failed: it returned false", err, 1, true)
  end)

  it("a runaway hook is stopped by the event time limit", function()
    hooks.EVENT_TIME_LIMIT = 0.2
    local s = dns01.new { present = function() while true do end end, cleanup = function() end }
    local t0 = core.monotonic()
    local ok, err, code = in_task(s.present, s, dchal("c.example"))
    assert.is_nil(ok)
    assert.equal("timeout", code)
    assert.matches('"c.example"', err, 1, true)
    assert.is_true(core.monotonic() - t0 < 5)
  end)

  it("uses the engine's runner when given one, so failures count and reach on_error", function()
    local seen
    local policy = { on_error = function(e) seen = e end }
    local runner = hooks.new(policy)
    local s = dns01.new({ present = function() error("nope") end, cleanup = function() end }, { hooks = runner })
    in_task(s.present, s, dchal("d.example"))
    assert.equal(1, runner.errors)
    assert.equal("dns01.present", seen.hook)
  end)

  it("waits `propagation`, then polls propagation_check until it sees the record", function()
    testing.clock(1000)
    local asked = 0
    local s = dns01.new { present = function() end, cleanup = function() end, propagation = "30s",
      propagation_check = function(name, value)
        assert.equal("_acme-challenge.e.example", name)
        assert.equal("VALUE-e.example", value)
        asked = asked + 1
        return asked >= 3
      end, propagation_interval = "5s" }
    local task = loop.spawn(s.wait, s, dchal("e.example"))
    loop.run_until_idle()
    assert.equal(0, asked)               -- sleeping the 30 s
    core.clock_advance(30)
    loop.run_until_idle()
    assert.equal(1, asked)
    core.clock_advance(5) loop.run_until_idle()
    core.clock_advance(5) loop.run_until_idle()
    assert.equal(3, asked)
    assert.is_true(task.done)
    assert.same({ true, n = 1 }, task.results)
  end)

  it("gives up after propagation_timeout, naming the record", function()
    testing.clock(1000)
    local s = dns01.new { present = function() end, cleanup = function() end,
      propagation_check = function() return false end, propagation_timeout = "10s", propagation_interval = "4s" }
    local task = loop.spawn(s.wait, s, dchal("f.example"))
    for _ = 1, 5 do core.clock_advance(4) loop.run_until_idle() end
    assert.is_true(task.done)
    local _, err, code = table.unpack(task.results, 1, 3)
    assert.equal("timeout", code)
    assert.matches('dns-01 challenge for "f.example": TXT _acme-challenge.f.example not seen by propagation_check within 10s', err, 1, true)
  end)

  it("checks its options, naming them", function()
    local ok, err = pcall(dns01.new, { present = function() end })
    assert.is_false(ok)
    assert.matches('option "cleanup" is required', err, 1, true)
    ok, err = pcall(dns01.new, { present = function() end, cleanup = function() end, propagation = "soon" })
    assert.is_false(ok)
    assert.matches("propagation", err, 1, true)
    ok, err = pcall(dns01.new, { present = function() end, cleanup = function() end, propogation = "1s" })
    assert.is_false(ok)
    assert.matches('did you mean "propagation"', err, 1, true)
  end)
end)

describe("issuer:start at engine start-up (standby listeners for distributed solving)", function()
  local logs
  before_each(function() logs = testing.capture_logs() end)
  after_each(testing.reset)

  it("is called with the storage and the hook runner; a failure is logged and the engine goes on", function()
    local calls = {}
    local issuer = testing.issuer()
    issuer.start = function(_, ctx)
      calls[#calls + 1] = ctx
      return nil, "port taken", "EADDRINUSE"
    end
    local e = testing.engine(require("certmaint.policy").validate({ certificates = { "a.example" } }, "spec"),
      { issuer = issuer })
    assert.equal(1, #calls)
    assert.equal(e.storage, calls[1].storage)
    assert.equal(e.engine.hooks, calls[1].hooks)
    assert.is_truthy(e:cert("a.example"))
    local text = table.concat(logs(), "\n")
    assert.matches("event=issuer_start_failed", text, 1, true)
    assert.matches('error="port taken"', text, 1, true)
    assert.matches("code=EADDRINUSE", text, 1, true)
  end)

  it("a raising start is logged too", function()
    local issuer = testing.issuer()
    issuer.start = function() error("boom at start") end
    local e = testing.engine(require("certmaint.policy").validate({ certificates = { "b.example" } }, "spec"),
      { issuer = issuer })
    assert.is_truthy(e:cert("b.example"))
    assert.matches("boom at start", table.concat(logs(), "\n"), 1, true)
  end)
end)
