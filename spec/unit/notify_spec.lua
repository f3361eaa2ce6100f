-- certmaint.notify: the shipped notification hooks against real endpoints in
-- this process and real programs: a webhook receiver (loop.serve on
-- 127.0.0.1), a command, and a sendmail stand-in script that records stdin.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local notify = require "certmaint.notify"
local testing = require "certmaint.testing"
local helpers = require "helpers.policies"
local tasks = require "helpers.loop_task"

local CERT = { names = { "a.test", "www.a.test" }, serial = "0abc", issuer = "testing", not_after = 1800000000 }
local function info(over)
  local i = { event = "failure", kind = "renew", name = "a.test", names = { "a.test", "www.a.test" }, host = "web1",
    at = 1790000000, since = 1789990000, message = "challenge failed\nsecond line", code = "acme:connection",
    attempt = 3, failures = 3, ["repeat"] = false }
  for k, v in pairs(over or {}) do i[k] = v end
  return i
end

describe("certmaint.notify", function()
  local dir
  before_each(function()
    testing.capture_logs()
    dir = helpers.tmpdir()
  end)
  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("payload: the documented fields, times in RFC 3339", function()
    local p = notify.payload(CERT, info())
    assert.same({ event = "failure", kind = "renew", name = "a.test", names = { "a.test", "www.a.test" },
      host = "web1", at = "2026-09-21T14:13:20Z", since = "2026-09-21T11:26:40Z", message = "challenge failed\nsecond line",
      code = "acme:connection", attempt = 3, failures = 3, ["repeat"] = false, serial = "0abc", issuer = "testing",
      not_after = "2027-01-15T08:00:00Z" }, p)
  end)

  it("mail: To, Subject on one line, the event in the body", function()
    local m = notify.mail(CERT, info(), { "ops@a.test", "oncall@a.test" }, "certmaint@web1.a.test", 1790000000)
    local head, body = m:match("^(.-)\n\n(.*)$")
    assert.matches("\nTo: ops@a.test, oncall@a.test\n", "\n" .. head .. "\n")
    assert.matches("\nFrom: certmaint@web1.a.test\n", "\n" .. head .. "\n")
    assert.matches("\nSubject: certmaint: renewal failed for a.test on web1\n", "\n" .. head .. "\n", 1, true)
    assert.matches("\nDate: Mon, 21 Sep 2026 14:13:20 %+0000\n", "\n" .. head .. "\n")
    assert.matches("message: challenge failed\n  second line\n", body, 1, true)
    local r = notify.mail(CERT, info { event = "recovered", message = "evil\r\nBcc: x@y" }, "ops@a.test", nil, 0)
    assert.matches("Subject: certmaint: renewal recovered for a.test on web1\n", r, 1, true)
    assert.is_nil(r:match("\nBcc:"))
  end)

  it("rejects bad options when the policy loads", function()
    assert.has_error(function() notify.webhook { url = "ftp://x" } end)
    assert.has_error(function() notify.webhook { url = "http://x", headers = { ["X-A"] = "a\r\nb" } } end)
    assert.has_error(function() notify.webhook { url = "http://x", retries = 3 } end)
    assert.has_error(function() notify.command {} end)
    assert.has_error(function() notify.sendmail { from = "a@b" } end)
    assert.has_error(function() notify.sendmail { to = "not an address" } end)
  end)

  describe("webhook", function()
    local seen, answer, url
    before_each(function()
      seen = {}
      answer = function() return { status = 204, body = "" } end
      local _, port = assert(loop.serve({ listen = "127.0.0.1:0", timeout = 60 }, function(req)
        seen[#seen + 1] = req
        return answer(req)
      end))
      url = "http://127.0.0.1:" .. port .. "/hook"
    end)

    it("POSTs the payload as JSON with the policy's headers", function()
      local hook = notify.webhook { url = url, headers = { Authorization = "Bearer t0k" } }
      assert.is_true(tasks.run(function() return hook(CERT, info()) end))
      assert.equal(1, #seen)
      assert.equal("POST", seen[1].method)
      assert.equal("/hook", seen[1].path)
      assert.equal("application/json", seen[1].headers["content-type"])
      assert.equal("Bearer t0k", seen[1].headers["authorization"])
      assert.same(notify.payload(CERT, info()), core.json_decode(seen[1].body))
    end)

    it("retries a 500 with back-off, then delivers", function()
      answer = function() return { status = #seen < 3 and 500 or 200, body = "x" } end
      local hook = notify.webhook { url = url, backoff = 0.05 }
      assert.is_true(tasks.run(function() return hook(CERT, info()) end))
      assert.equal(3, #seen)
    end)

    it("gives up after `attempts` 500s, and at once on a 4xx", function()
      answer = function() return { status = 500, body = "no" } end
      local hook = notify.webhook { url = url, backoff = 0.01, attempts = 3 }
      local ok, err = tasks.run(function() return hook(CERT, info()) end)
      assert.is_nil(ok)
      assert.matches("HTTP status 500", err)
      assert.equal(3, #seen)
      answer = function() return { status = 403, body = "no" } end
      ok, err = tasks.run(function() return hook(CERT, info()) end)
      assert.is_nil(ok)
      assert.matches("HTTP status 403", err)
      assert.equal(4, #seen)
    end)

    it("a receiver that hangs costs at most the deadline", function()
      answer = function() loop.sleep(30) return { status = 200 } end
      local hook = notify.webhook { url = url, timeout = 0.3, backoff = 0.1, deadline = 1 }
      local t0 = core.monotonic()
      local ok, err = tasks.run(function() return hook(CERT, info()) end)
      local took = core.monotonic() - t0
      assert.is_nil(ok)
      assert.matches("webhook gave up", err)
      assert.is_true(took < 3, "took " .. took .. " s")
    end)
  end)

  it("command: no shell, the payload on stdin, CERTMAINT_* in the environment", function()
    local out = dir .. "/got"
    local hook = notify.command { "/bin/sh", "-c", 'cat > "$1.json"; env | grep ^CERTMAINT_ | sort > "$1.env"', "sh", out,
      env = { EXTRA = "1" } }
    assert.is_true(tasks.run(function() return hook(CERT, info()) end))
    assert.same(notify.payload(CERT, info()), core.json_decode(assert(core.read_file(out .. ".json"))))
    local env = assert(core.read_file(out .. ".env"))
    assert.matches("CERTMAINT_EVENT=failure\n", env, 1, true)
    assert.matches("CERTMAINT_KIND=renew\n", env, 1, true)
    assert.matches("CERTMAINT_NAME=a.test\n", env, 1, true)
    assert.matches("CERTMAINT_NAMES=a.test www.a.test\n", env, 1, true)
    assert.matches("CERTMAINT_MESSAGE=challenge failed second line\n", env, 1, true)
    local failing = notify.command { argv = { "/bin/sh", "-c", "echo nope >&2; exit 3" } }
    local ok, err = tasks.run(function() return failing(CERT, info()) end)
    assert.is_nil(ok)
    assert.matches("exit status 3: nope", err)
    local slow = notify.command { argv = { "/bin/sleep", "30" }, timeout = 0.3 }
    local t0 = core.monotonic()
    ok = tasks.run(function() return slow(CERT, info()) end)
    assert.is_nil(ok)
    assert.is_true(core.monotonic() - t0 < 10)
  end)

  it("sendmail: pipes the message to PATH -t -i", function()
    local stub = dir .. "/sendmail"
    local f = assert(io.open(stub, "w"))
    f:write('#!/bin/sh\nprintf "%s\\n" "$*" > "$0.args"\ncat > "$0.msg"\n')
    f:close()
    os.execute("chmod 755 '" .. stub .. "'")
    local hook = notify.sendmail { to = "ops@a.test", from = "cm@a.test", path = stub }
    assert.is_true(tasks.run(function() return hook(CERT, info { event = "expiring", kind = "expiring" }) end))
    assert.equal("-t -i\n", core.read_file(stub .. ".args"))
    local msg = assert(core.read_file(stub .. ".msg"))
    assert.matches("\nTo: ops@a.test\n", msg, 1, true)
    assert.matches("Subject: certmaint: certificate expiring for a.test on web1\n", msg, 1, true)
    assert.matches("\n\nevent: expiring\n", msg, 1, true)
  end)
end)
