-- Distributed http-01 solving with the standalone solver: a challenge one
-- instance presents is kept in the shared storage, and another instance's
-- listener (standing by from start-up, issuer:start) answers it from there.
-- Two "instances" are two solver sets on two memory storages sharing data.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local testing = require "certmaint.testing"
local keys = require "certmaint.keys"
local http01 = require "certmaint.acme.challenges.http01"
local tokens = require "certmaint.acme.challenges.tokens"

local ISS = "127.0.0.1-14000-dir"


local tasks = require "helpers.loop_task"
local function run(fn) return tasks.run(fn, 10) end
local free_port = tasks.free_port

local function get(port, token, host)
  return assert(loop.http { url = "http://127.0.0.1:" .. port .. "/.well-known/acme-challenge/" .. token,
    headers = { Host = host }, timeout = 5 })
end

local function chal(id, token)
  return { identifier = id, type = "http-01", token = token, key_authorization = token .. ".thumb",
    url = "https://ca/chal/" .. token }
end

describe("distributed http-01", function()
  local logs
  before_each(function() logs = testing.capture_logs() end)
  after_each(testing.reset)

  it("an instance standing by answers from storage what another presented; both clean up", function()
    local store_a = testing.memory()
    local store_b = testing.memory { share = store_a }
    local port_a, port_b = free_port(), free_port()
    local orderer = http01.new({ listen = "127.0.0.1:" .. port_a }, { storage = store_a, issuer_key = ISS })
    local answerer = http01.new({ listen = "127.0.0.1:" .. port_b, standby = true },
      { storage = store_b, issuer_key = ISS })
    local c = chal("a.example", "tokA")
    local before, hit, wrong_host, after = run(function()
      assert(answerer:start())
      local r0 = get(port_b, "tokA", "a.example")
      assert(orderer:present(c))
      local r1 = get(port_b, "tokA", "a.example:80")
      local r2 = get(port_b, "tokA", "b.example")
      assert(orderer:cleanup(c))
      return r0, r1, r2, get(port_b, "tokA", "a.example")
    end)
    assert.equal(404, before.status)
    assert.equal(200, hit.status)
    assert.equal("tokA.thumb", hit.body)
    assert.equal(404, wrong_host.status)
    assert.equal(404, after.status)
    assert.equal(port_b, (http01.serving("127.0.0.1:" .. port_b))) -- standby: still open
    assert.is_nil((http01.serving("127.0.0.1:" .. port_a)))        -- the orderer's closed after cleanup
    assert.is_false(run(function() return store_a:exists(keys.challenge_token(ISS, "a.example")) end))
    assert.matches("event=challenge_served challenge=http-01 distributed=true identifier=a.example",
      table.concat(logs(), "\n"), 1, true)
  end)

  it("answers a challenge Caddy stored (its JSON, its key)", function()
    local store = testing.memory()
    local port = free_port()
    local s = http01.new({ listen = "127.0.0.1:" .. port, standby = true }, { storage = store, issuer_key = ISS })
    local r = run(function()
      assert(store:store("acme/" .. ISS .. "/challenge_tokens/caddy.example.json",
        '{"type":"http-01","url":"https://ca/c/9","status":"pending","token":"Tk9",' ..
        '"keyAuthorization":"Tk9.caddythumb","identifier":{"type":"dns","value":"caddy.example"}}'))
      assert(s:start())
      return get(port, "Tk9", "caddy.example")
    end)
    assert.equal(200, r.status)
    assert.equal("Tk9.caddythumb", r.body)
  end)

  it("distributed = false keeps challenges out of storage and answers only its own", function()
    local store = testing.memory()
    local port = free_port()
    local s = http01.new({ listen = "127.0.0.1:" .. port, distributed = false }, { storage = store, issuer_key = ISS })
    local own, other = run(function()
      assert(tokens.present(store, ISS, chal("other.example", "tokO")))
      assert(s:present(chal("own.example", "tokS")))
      local a, b = get(port, "tokS", "own.example"), get(port, "tokO", "other.example")
      assert(s:cleanup(chal("own.example", "tokS")))
      return a, b
    end)
    assert.equal(200, own.status)
    assert.equal(404, other.status)
    assert.is_false(run(function() return store:exists(keys.challenge_token(ISS, "own.example")) end))
  end)
end)
