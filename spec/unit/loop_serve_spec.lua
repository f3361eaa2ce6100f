-- loop.serve: the in-loop HTTP server in event mode, where Lua answers what
-- the C path table cannot (core.http_serve_respond), and the distributed
-- http-01 answer built on it (challenges.tokens.responder). Real sockets on
-- 127.0.0.1, the core's HTTP client as the other side.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local testing = require "certmaint.testing"
local tokens = require "certmaint.acme.challenges.tokens"

local tasks = require "helpers.loop_task"
local function run(fn) return tasks.run(fn, 20) end

describe("loop.serve", function()
  local logs
  before_each(function() logs = testing.capture_logs() end)
  after_each(testing.reset)

  it("hands misses to the handler, which may wait, and answers the table in C", function()
    local seen = {}
    local id, port = assert(loop.serve({ listen = "127.0.0.1:0" }, function(req)
      seen[#seen + 1] = req
      if req.path == "/slow" then loop.sleep(0.1) end
      return { status = 201, body = req.method .. ":" .. req.body, headers = { ["X-Stub"] = "1" } }
    end))
    assert(core.http_serve_set(id, "/static", "from C"))
    local base = "http://127.0.0.1:" .. port
    local a, b, c = run(function()
      return loop.http { url = base .. "/slow?q=1", method = "POST", body = "payload",
          headers = { ["Content-Type"] = "application/json" } },
        loop.http { url = base .. "/static" },
        loop.http { url = base .. "/x", method = "DELETE" }
    end)
    assert.equal(201, a.status)
    assert.equal("POST:payload", a.body)
    assert.equal("1", a.headers["x-stub"])
    assert.equal("from C", b.body)
    assert.equal("DELETE:", c.body)
    assert.equal(2, #seen)
    assert.equal("/slow", seen[1].path)
    assert.equal("q=1", seen[1].query)
    assert.equal("application/json", seen[1].headers["content-type"])
    assert.equal("127.0.0.1:" .. port, seen[1].host)
    assert.equal(id, seen[1].server)
    local st = core.http_serve_stats(id)
    assert.equal(2, st.asked)
    assert.equal(2, st.answered)
  end)

  it("answers many requests at once, each handler in its own task", function()
    local _, port = assert(loop.serve({ listen = "127.0.0.1:0" }, function(req)
      loop.sleep(0.2)
      return req.path
    end))
    local t0 = core.monotonic()
    local bodies = {}
    local tasks = {}
    for i = 1, 20 do
      tasks[i] = loop.spawn(function()
        local r = assert(loop.http { url = "http://127.0.0.1:" .. port .. "/n" .. i })
        bodies[i] = r.body
      end)
    end
    assert.is_true(loop.run_until(function()
      for _, t in ipairs(tasks) do if not t.done then return false end end
      return true
    end, { timeout = 20 }))
    for i = 1, 20 do assert.equal("/n" .. i, bodies[i]) end
    assert.is_true(core.monotonic() - t0 < 2) -- 20 x 0.2 s in parallel, not 4 s
  end)

  it("turns a raising handler into 500, nil into 404, a bad answer into 500, and logs why", function()
    local _, port = assert(loop.serve({ listen = "127.0.0.1:0" }, function(req)
      if req.path == "/raise" then error("stub broke") end
      if req.path == "/bad" then return { status = 200, headers = { ["Content-Length"] = "1" } } end
      if req.path == "/typo" then return { stauts = 200 } end
      return nil
    end))
    local base = "http://127.0.0.1:" .. port
    local r1, r2, r3, r4 = run(function()
      return loop.http { url = base .. "/raise" }, loop.http { url = base .. "/none" },
        loop.http { url = base .. "/bad" }, loop.http { url = base .. "/typo" }
    end)
    assert.equal(500, r1.status)
    assert.equal(404, r2.status)
    assert.equal(500, r3.status)
    assert.equal(500, r4.status)
    local text = table.concat(logs(), "\n")
    assert.matches("event=serve_handler_failed", text, 1, true)
    assert.matches("stub broke", text, 1, true)
    assert.matches("Content-Length is the server's own", text, 1, true)
    assert.matches('unknown option \\"stauts\\"', text, 1, true)
  end)

  it("bounds request bodies with max_body (413, the handler never runs)", function()
    local called = false
    local _, port = assert(loop.serve({ listen = "127.0.0.1:0", max_body = 16 }, function() called = true end))
    local r = run(function()
      return loop.http { url = "http://127.0.0.1:" .. port .. "/", method = "POST", body = string.rep("x", 17) }
    end)
    assert.equal(413, r.status)
    assert.is_false(called)
  end)

  it("bounds answer bodies with max_response: 1 MiB by default, more when asked (metrics)", function()
    local big = string.rep("m", 1024 * 1024 + 1)
    local _, small_port = assert(loop.serve({ listen = "127.0.0.1:0" }, function() return { body = big } end))
    local _, large_port = assert(loop.serve({ listen = "127.0.0.1:0", max_response = 4 * 1024 * 1024 },
      function() return { body = big } end))
    local refused, served = run(function()
      return loop.http { url = "http://127.0.0.1:" .. small_port .. "/" },
        loop.http { url = "http://127.0.0.1:" .. large_port .. "/", max_bytes = 8 * 1024 * 1024 }
    end)
    assert.equal(500, refused.status) -- the answer is refused, logged, and the client told
    assert.equal(200, served.status)
    assert.equal(#big, #served.body)
    assert.same({ nil, "max_response must be between 1 and 536870912 bytes", "invalid" },
      { core.http_serve { listen = "127.0.0.1:0", max_response = 0 } })
    assert.same({ nil, "max_response must be between 1 and 536870912 bytes", "invalid" },
      { core.http_serve { listen = "127.0.0.1:0", max_response = 512 * 1024 * 1024 + 1 } })
  end)

  it("core.http_serve_respond refuses what it cannot send, naming it", function()
    assert.same({ nil, "no request 123456 waiting (answered already, or its client left)", "ENOENT" },
      { core.http_serve_respond(123456, { status = 200 }) })
    assert.has_error(function() core.http_serve_respond(1, { status = 99 }) end,
      "http_serve_respond: status 99 is not between 200 and 599")
    assert.has_error(function() core.http_serve_respond(1, { bdoy = "" }) end)
  end)

  it("a server closed with loop.serve_close forgets its handler; reset closes all", function()
    local id = assert(loop.serve({ listen = "127.0.0.1:0" }, function() return "x" end))
    assert.is_true(loop.serve_close(id))
    assert.is_false(loop.serve_close(id))
    assert(loop.serve({ listen = "127.0.0.1:0" }, function() return "x" end))
    loop.reset()
    assert.equal(0, core.loop_pending().servers)
  end)
end)

describe("distributed http-01: an instance answers from storage a challenge another presented", function()
  local logs
  before_each(function() logs = testing.capture_logs() end)
  after_each(testing.reset)

  it("serves the key authorization of a stored challenge for its host only", function()
    local store = testing.memory()
    local ISS = "127.0.0.1-14000-dir"
    local _, port = assert(loop.serve({ listen = "127.0.0.1:0" }, tokens.responder(store, { ISS })))
    local url = "http://127.0.0.1:" .. port .. "/.well-known/acme-challenge/tok1"
    local hit, wrong_host, other_token = run(function()
      assert(tokens.present(store, ISS, { identifier = "a.example", token = "tok1",
        key_authorization = "tok1.thumb", url = "https://ca/chal/1" }))
      return loop.http { url = url, headers = { Host = "a.example:" .. port } },
        loop.http { url = url, headers = { Host = "b.example" } },
        loop.http { url = url:gsub("tok1$", "tok2"), headers = { Host = "a.example" } }
    end)
    assert.equal(200, hit.status)
    assert.equal("tok1.thumb", hit.body)
    assert.equal(404, wrong_host.status)
    assert.equal(404, other_token.status)
    assert.matches("event=challenge_served challenge=http-01 distributed=true identifier=a.example",
      table.concat(logs(), "\n"), 1, true)
  end)
end)
