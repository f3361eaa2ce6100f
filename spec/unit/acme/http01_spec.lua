-- The http-01 standalone solver on the core's in-loop server.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local testing = require "certmaint.testing"
local http01 = require "certmaint.acme.challenges.http01"


local tasks = require "helpers.loop_task"
local function run(fn) return tasks.run(fn, 10) end
local free_port = tasks.free_port

local function get(port, path)
  return loop.http { url = "http://127.0.0.1:" .. port .. path, timeout = 5 }
end

describe("acme.challenges.http01", function()
  before_each(function() testing.capture_logs() end)
  after_each(testing.reset)

  it("answers the key authorization at the token's path, nothing else, and closes when done", function()
    local port = free_port()
    local listen = "127.0.0.1:" .. port
    local a = http01.new({ listen = listen }, {})
    local b = http01.new({ listen = listen }, {})
    local c1 = { identifier = "a.test", type = "http-01", token = "tok_A-1", key_authorization = "tok_A-1.thumb" }
    local c2 = { identifier = "b.test", type = "http-01", token = "tokB", key_authorization = "tokB.thumb" }
    run(function()
      assert(a:present(c1))
      assert(b:present(c2)) -- two solvers, one listener
      assert.equal(port, (http01.serving(listen)))
      local r = assert(get(port, "/.well-known/acme-challenge/tok_A-1"))
      assert.equal(200, r.status)
      assert.equal("tok_A-1.thumb", r.body)
      assert.equal("tokB.thumb", assert(get(port, "/.well-known/acme-challenge/tokB")).body)
      assert.equal(404, assert(get(port, "/.well-known/acme-challenge/other")).status)
      assert.equal(404, assert(get(port, "/")).status)
      assert(a:cleanup(c1))
      assert.equal(404, assert(get(port, "/.well-known/acme-challenge/tok_A-1")).status)
      assert.equal(200, assert(get(port, "/.well-known/acme-challenge/tokB")).status)
      assert(b:cleanup(c2))
      assert.is_nil(http01.serving(listen))
      assert.is_nil(get(port, "/"))
    end)
  end)

  it("refuses a token that is not base64url, and says which name", function()
    local s = http01.new({ listen = "127.0.0.1:" .. free_port() }, {})
    local ok, err, code = run(function()
      return s:present { identifier = "a.test", token = "../etc", key_authorization = "x" }
    end)
    assert.is_nil(ok)
    assert.equal("invalid", code)
    assert.truthy(err:find("http-01 challenge for a.test", 1, true))
  end)

  it("reports a port it cannot listen on", function()
    local id, port = assert(core.http_serve { listen = "127.0.0.1:0" })
    local s = http01.new({ listen = "127.0.0.1:" .. port }, {})
    local ok, err = run(function() return s:present { identifier = "a.test", token = "t", key_authorization = "t.x" } end)
    core.http_serve_close(id)
    assert.is_nil(ok)
    assert.truthy(err:find("listening on 127.0.0.1:" .. port, 1, true), err)
  end)
  it("keeps the challenge in storage and answers another instance's from there (distributed)", function()
    local keys = require "certmaint.keys"
    local storage = testing.memory()
    local other = testing.memory { share = storage } -- a second instance on the same data
    local p1, p2 = free_port(), free_port()
    local ctx = { storage = storage, issuer_key = "127.0.0.1-14000-dir" }
    local orderer = http01.new({ listen = "127.0.0.1:" .. p1 }, ctx)
    local stander = http01.new({ listen = "127.0.0.1:" .. p2, standby = true },
      { storage = other, issuer_key = "127.0.0.1-14000-dir" })
    local chal = { identifier = "d.test", type = "http-01", token = "tokD", key_authorization = "tokD.thumb",
      url = "https://ca/chall/1" }
    run(function()
      assert(stander:start())
      assert.equal(p2, (http01.serving("127.0.0.1:" .. p2)))
      assert(orderer:present(chal))
      assert.truthy(storage:load(keys.challenge_token("127.0.0.1-14000-dir", "d.test")))
      -- the standby instance never saw this challenge: it finds it in storage
      local r = assert(loop.http { url = "http://127.0.0.1:" .. p2 .. "/.well-known/acme-challenge/tokD",
        headers = { "Host: d.test" }, timeout = 5 })
      assert.equal(200, r.status)
      assert.equal("tokD.thumb", r.body)
      -- another host's name, or another token: not ours
      r = assert(loop.http { url = "http://127.0.0.1:" .. p2 .. "/.well-known/acme-challenge/tokD",
        headers = { "Host: e.test" }, timeout = 5 })
      assert.equal(404, r.status)
      r = assert(loop.http { url = "http://127.0.0.1:" .. p2 .. "/.well-known/acme-challenge/tokX",
        headers = { "Host: d.test" }, timeout = 5 })
      assert.equal(404, r.status)
      assert(orderer:cleanup(chal))
      assert.is_nil(storage:load(keys.challenge_token("127.0.0.1-14000-dir", "d.test")))
      r = assert(loop.http { url = "http://127.0.0.1:" .. p2 .. "/.well-known/acme-challenge/tokD",
        headers = { "Host: d.test" }, timeout = 5 })
      assert.equal(404, r.status)
      -- the ordering one closed, the standby one stays
      assert.is_nil(http01.serving("127.0.0.1:" .. p1))
      assert.equal(p2, (http01.serving("127.0.0.1:" .. p2)))
    end)
  end)

  it("keeps nothing in storage with distributed = false", function()
    local storage = testing.memory()
    local s = http01.new({ listen = "127.0.0.1:" .. free_port(), distributed = false },
      { storage = storage, issuer_key = "ca" })
    run(function()
      assert(s:present { identifier = "a.test", token = "t1", key_authorization = "t1.x" })
      assert.same({}, storage:list("acme", true) or {})
      assert(s:cleanup { identifier = "a.test", token = "t1", key_authorization = "t1.x" })
    end)
  end)
end)
