-- certmaint.failpoint and core/failpoint.c: what each action does at the
-- hit it is aimed at. CERTMAINT_FAILPOINTS is read once when the core
-- loads, so each case runs in a child lua5.4 with its own setting.
local core = require "certmaint.core"

local LUA = (os.getenv("CERTMAINT_HOST_PRELOAD") and ("LD_PRELOAD=" .. os.getenv("CERTMAINT_HOST_PRELOAD")
  .. " ASAN_OPTIONS=detect_leaks=0 ") or "") .. "lua5.4"

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(core.mkdir_p(p, "0700"))
  return p
end

-- Run `code` in a child with CERTMAINT_FAILPOINTS=spec: its stdout, stderr
-- and how it ended ("exit", n | "signal", n).
local function child(spec, code)
  local dir = tmpdir()
  local script = dir .. "/child.lua"
  local f = assert(io.open(script, "w"))
  f:write(code)
  f:close()
  local cmd = string.format("CERTMAINT_FAILPOINTS='%s' %s %s >%s/out 2>%s/err", spec, LUA, script, dir, dir)
  local _, how, n = os.execute(cmd)
  local out = core.read_file(dir .. "/out", 65536) or ""
  local err = core.read_file(dir .. "/err", 65536) or ""
  os.execute("rm -rf '" .. dir .. "'")
  -- a shell reports a child killed by a signal as 128 + n
  if how == "exit" and n > 128 then how, n = "signal", n - 128 end
  return out, err, how, n
end

local CALLS = [[
local failpoint = require "certmaint.failpoint"
local function step(i) io.write("ran ", i, "\n") io.flush() return "done", i end
for i = 1, 3 do
  local a, b, c = failpoint.call("lock.acquire", step, i)
  io.write("returned ", tostring(a), " ", tostring(b), " ", tostring(c), "\n") io.flush()
end
]]

describe("failpoints", function()
  it("are listed, each with a description", function()
    local list = core.failpoint_list()
    assert.is_true(#list >= 30)
    local seen = {}
    for _, p in ipairs(list) do
      assert.matches("^[a-z_]+%.[a-z_.]+$", p.name)
      assert.is_true(#p.description > 0)
      assert.is_nil(seen[p.name], "listed twice: " .. p.name)
      seen[p.name] = true
    end
    for _, name in ipairs { "file.write.rename", "commit.manifest", "lock.acquire", "etcd.txn", "acme.finalize",
                            "ocsp.fetch" } do
      assert.is_true(seen[name], name)
    end
  end)

  it("cost nothing and change nothing when none is armed", function()
    local out, _, how, n = child("", CALLS)
    assert.same({ "exit", 0 }, { how, n })
    assert.equal("ran 1\nreturned done 1 nil\nran 2\nreturned done 2 nil\nran 3\nreturned done 3 nil\n", out)
  end)

  it("crash-before kills the process before the step at the hit it names", function()
    local out, err, how, n = child("lock.acquire=crash-before@2", CALLS)
    assert.same({ "signal", 9 }, { how, n })
    assert.equal("ran 1\nreturned done 1 nil\n", out)
    assert.matches("event=failpoint_triggered name=lock.acquire action=crash-before", err, 1, true)
  end)

  it("crash-after lets the step run, then kills the process", function()
    local out, _, how, n = child("lock.acquire=crash-after@2", CALLS)
    assert.same({ "signal", 9 }, { how, n })
    assert.equal("ran 1\nreturned done 1 nil\nran 2\n", out)
  end)

  it("enospc and eio fail the step without running it, once", function()
    local out, err, how = child("lock.acquire=enospc@1", CALLS)
    assert.equal("exit", how)
    assert.equal("returned nil lock.acquire: No space left on device (injected: failpoint lock.acquire) ENOSPC\n"
      .. "ran 2\nreturned done 2 nil\nran 3\nreturned done 3 nil\n", out)
    assert.matches("action=enospc", err, 1, true)
    out = child("lock.acquire=eio@3", CALLS)
    assert.matches("returned nil lock.acquire: Input/output error %(injected: failpoint lock.acquire%) EIO\n$", out)
  end)

  it("sleep:MS runs the step that much later", function()
    local out = child("lock.acquire=sleep:300", [[
local core = require "certmaint.core"
local failpoint = require "certmaint.failpoint"
local t0 = core.monotonic()
failpoint.call("lock.acquire", function() end)
io.write(string.format("%.3f\n", core.monotonic() - t0))
]])
    assert.is_true(tonumber(out) >= 0.29, out)
  end)

  it("in C: an injected ENOSPC is what the file call reports, and nothing is written", function()
    local out, _, how = child("file.write.tmp=enospc", [[
local core = require "certmaint.core"
local dir = os.tmpname() os.remove(dir) assert(core.mkdir_p(dir, "0700"))
local ok, err, code = core.write_atomic(dir .. "/f", "x", "0600")
io.write(tostring(ok), " ", tostring(code), " ", tostring(core.read_file(dir .. "/f", 10)), "\n")
io.write(tostring(core.write_atomic(dir .. "/f", "y", "0600")), " ", core.read_file(dir .. "/f", 10), "\n")
os.execute("rm -rf '" .. dir .. "'")
]])
    assert.equal("exit", how)
    assert.equal("nil ENOSPC nil\ntrue y\n", out)
  end)

  it("refuse an unknown point or action, naming it", function()
    local _, err = child("no.such=eio", "require 'certmaint.core'")
    assert.matches('unknown point "no.such"', err, 1, true)
    _, err = child("lock.acquire=sleep:x", "require 'certmaint.core'")
    assert.matches("the action must be crash-before, crash-after, enospc, eio or sleep:MS", err, 1, true)
  end)

  it("raise on a name that is not declared, when armed", function()
    local out = child("lock.acquire=eio@9", [[
local failpoint = require "certmaint.failpoint"
print(pcall(failpoint.call, "no.such.point", function() end))
]])
    assert.matches('^false%s.*failpoint "no.such.point" is not declared', out)
  end)
end)
