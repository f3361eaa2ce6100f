-- certmaint.fetch against a real HTTP server on 127.0.0.1 (loop.serve): the
-- OCSP GET/POST choice of RFC 5019, the size limit, timeouts, HTTP errors.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local fetch = require "certmaint.fetch"
local responder = require "certmaint.responder"
local testing = require "certmaint.testing"

local tasks = require "helpers.loop_task"
local function run(fn) return tasks.run(fn, 20) end

local function url_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

describe("certmaint.fetch", function()
  local seen, port, base, answer

  before_each(function()
    testing.capture_logs()
    seen = {}
    answer = function() return { status = 200, body = "ANSWER" } end
    local _
    _, port = assert(loop.serve({ listen = "127.0.0.1:0" }, function(req)
      seen[#seen + 1] = req
      return answer(req)
    end))
    base = "http://127.0.0.1:" .. port
  end)
  after_each(testing.reset)

  describe("ocsp", function()
    local ca, leaf
    before_each(function()
      ca = testing.ca()
      leaf = ca:issue { names = { "fetch.test" }, ocsp_url = base .. "/ocsp" }
    end)

    it("GETs a request that fits 255 bytes URL-encoded, base64 in the path (RFC 5019)", function()
      local req = assert(core.ocsp_request(leaf.cert_pem, ca.cert_pem))
      local body = run(function() return fetch.ocsp(base .. "/ocsp", req) end)
      assert.equal("ANSWER", body)
      assert.equal(1, #seen)
      assert.equal("GET", seen[1].method)
      local encoded = assert(seen[1].path:match("^/ocsp/(.+)$"))
      assert.is_nil(encoded:find("[+/=]")) -- '+', '/', '=' are percent-encoded
      assert.equal(req, core.base64_decode(url_decode(encoded)))
    end)

    it("POSTs a request too long for GET, as application/ocsp-request", function()
      local req = string.rep("\48", 200) -- 200 bytes: 268 in base64, past 255
      assert.is_nil(fetch.ocsp_get_url(base, req))
      local body = run(function() return fetch.ocsp(base .. "/ocsp", req) end)
      assert.equal("ANSWER", body)
      assert.equal("POST", seen[1].method)
      assert.equal("/ocsp", seen[1].path)
      assert.equal("application/ocsp-request", seen[1].headers["content-type"])
      assert.equal(req, seen[1].body)
    end)

    it("chooses by the encoded length: 255 bytes is GET, 256 is POST", function()
      -- 189 bytes -> 252 base64 chars with no padding; each '/' in it adds 2
      local fits = string.rep("\0", 189)
      local url = assert(fetch.ocsp_get_url("http://h", fits))
      assert.equal(252, #url - #"http://h/")
      assert.is_nil(fetch.ocsp_get_url("http://h", string.rep("\255", 189))) -- all '/': 756
    end)

    it("fails on an HTTP status other than 200, naming the URL", function()
      answer = function() return { status = 503, body = "busy" } end
      local body, err, code = run(function() return fetch.ocsp(base .. "/ocsp", "\48\0") end)
      assert.is_nil(body)
      assert.equal("http", code)
      assert.equal(base .. "/ocsp: HTTP status 503", err)
      -- a responder URL with '%' in it is named as it is
      body, err = run(function() return fetch.ocsp(base .. "/o%2Fcsp", "\48\0") end)
      assert.is_nil(body)
      assert.equal(base .. "/o%2Fcsp: HTTP status 503", err)
    end)

    it("refuses an answer larger than max_size", function()
      answer = function() return { status = 200, body = string.rep("x", 5000) } end
      local body, err, code = run(function() return fetch.ocsp(base .. "/ocsp", "\48\0", { max_size = 4096 }) end)
      assert.is_nil(body)
      assert.equal("toobig", code)
      assert.matches("larger than 4096 bytes", err)
    end)

    it("gives up after the timeout", function()
      answer = function() loop.sleep(5) return "late" end
      local body, err, code = run(function() return fetch.ocsp(base .. "/ocsp", "\48\0", { timeout = 1 }) end)
      assert.is_nil(body)
      assert.equal("timeout", code)
      assert.matches(base .. "/ocsp", err, 1, true)
    end)

    it("fails to connect to a port nobody listens on", function()
      local free = tasks.free_port()
      local body, err, code = run(function()
        return fetch.ocsp("http://127.0.0.1:" .. free .. "/", "\48\0", { timeout = 5 })
      end)
      assert.is_nil(body)
      assert.equal("connect", code)
      assert.matches("127.0.0.1:" .. free, err, 1, true)
    end)

    it("refuses a URL that is not http(s), and raises on bad options", function()
      local body, _, code = run(function() return fetch.ocsp("ldap://x/", "\48\0") end)
      assert.is_nil(body)
      assert.equal("url", code)
      assert.has_error(function() run(function() return fetch.ocsp(base, "\48\0", { max_sise = 1 }) end) end)
      assert.has_error(function() run(function() return fetch.ocsp(base, "") end) end)
    end)
  end)

  describe("get", function()
    it("returns the body, with headers sent", function()
      local body = run(function() return fetch.get(base .. "/crl", { headers = { ["X-A"] = "1" } }) end)
      assert.equal("ANSWER", body)
      assert.equal("GET", seen[1].method)
      assert.equal("1", seen[1].headers["x-a"])
    end)

    it("returns a body of exactly max_size, and refuses one byte more", function()
      answer = function() return string.rep("c", 2048) end
      assert.equal(2048, #run(function() return fetch.get(base .. "/crl", { max_size = 2048 }) end))
      local body, _, code = run(function() return fetch.get(base .. "/crl", { max_size = 2047 }) end)
      assert.is_nil(body)
      assert.equal("toobig", code)
    end)
  end)

  describe("the default responder", function()
    it("fetches with the policy's ocsp limits", function()
      answer = function() return string.rep("r", 3000) end
      local r = responder.new { ocsp = { timeout = 5, max_response_size = 2048, max_crl_size = 4096 } }
      local der, _, code = run(function() return r:ocsp(base .. "/", "\48\0") end)
      assert.is_nil(der)
      assert.equal("toobig", code)
      assert.equal(3000, #run(function() return r:crl(base .. "/c.crl") end))
    end)
  end)
end)
