local sandbox = require "certmaint.sandbox"
local core = require "certmaint.core"
local helpers = require "helpers.policies"

local function write_policy(src)
  local dir = helpers.tmpdir()
  local path = dir .. "/policy.lua"
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path, dir
end

describe("sandbox.load_policy", function()
  it("loads a good policy", function()
    local path = write_policy('local c = require "certmaint"\nreturn c.policy { certificates = { "a.test" } }\n')
    local p = assert(sandbox.load_policy(path))
    assert.equal("a.test", p.certificates[1].names[1])
  end)

  it("names file:line of a syntax error", function()
    local path = write_policy('return {\n  x = = 1\n}\n')
    local p, err = sandbox.load_policy(path)
    assert.is_nil(p)
    assert.matches("policy.lua:2:", err)
  end)

  it("refuses reading an undefined global, naming it and the line", function()
    local path = write_policy('local c = require "certmaint"\nreturn c.policy { certificates = { hostnme } }\n')
    local p, err = sandbox.load_policy(path)
    assert.is_nil(p)
    assert.matches("policy.lua:2:.*hostnme", err)
  end)

  it("refuses assigning a global", function()
    local path = write_policy('x = 1\nreturn nil\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("policy.lua:1:.*global 'x'", err)
  end)

  it("has no os.execute or io.popen (they would block the loop)", function()
    local path = write_policy('return os.execute\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("policy.lua:1: os.execute is not available in a policy: it would block the loop", err)
    path = write_policy('return io.popen\n')
    _, err = sandbox.load_policy(path)
    assert.matches("popen", err)
  end)

  it("refuses modules outside certmaint, lfs and the policy's folder", function()
    local path = write_policy('require "socket"\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("module 'socket' is not allowed", err)
  end)

  it("loads the operator's own module from next to the policy", function()
    local path, dir = write_policy('local d = require "mydomains"\nlocal c = require "certmaint"\nreturn c.policy { certificates = d }\n')
    local f = assert(io.open(dir .. "/mydomains.lua", "w"))
    f:write('return { "x.test", "y.test" }\n')
    f:close()
    local p = assert(sandbox.load_policy(path))
    assert.equal(2, #p.certificates)
  end)

  it("refuses binary chunks through load", function()
    local path = write_policy('return load(string.dump(function() end), "x", "b")\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("only text chunks", err)
  end)

  it("says what a policy returned when it is not a policy", function()
    local path = write_policy('return { certificates = { "a.test" } }\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("must return certmaint.policy", err)
  end)

  it("gives policies their own environment", function()
    local p1 = write_policy('local c = require "certmaint"\nstring.evil = true\nreturn c.policy { certificates = { "a.test" } }\n')
    assert(sandbox.load_policy(p1))
    assert.is_nil(string.evil)
  end)

  it("refuses unknown options in the one wording", function()
    local path = write_policy('return nil\n')
    assert.error_matches(function() sandbox.load_policy(path, { getnev = os.getenv }) end,
      'sandbox.load_policy: unknown option "getnev" (did you mean "getenv"? known: getenv, memory_max, seconds)', 1, true)
  end)

  it("refuses certmaint.core to a policy, with a clear message at the line", function()
    local path = write_policy('local c = require "certmaint"\nlocal core = require "certmaint.core"\n'
      .. 'core.clock_set(0)\nreturn c.policy { certificates = { "a.test" } }\n')
    local p, err = sandbox.load_policy(path)
    assert.is_nil(p)
    assert.matches("policy.lua:2: require: module 'certmaint.core' is private to certmaint and not available "
      .. "in a policy (use require \"certmaint\"", err, 1, true)
  end)

  it("refuses the other private modules and allows the public ones", function()
    for _, name in ipairs { "certmaint.core", "certmaint.testing", "certmaint.engine",
                            "certmaint.jobs", "certmaint.cli", "certmaint.hooks", "certmaint.sandbox",
                            "certmaint.policy", "certmaint.storage.common", "certmaint.nonesuch" } do
      local path = write_policy('require "' .. name .. '"\n')
      local p, err = sandbox.load_policy(path)
      assert.is_nil(p, name)
      assert.matches("module '" .. name .. "' is private to certmaint", err, 1, true)
    end
    local path = write_policy([[
local c = require "certmaint"
local mods = {}
for _, name in ipairs { "certmaint.duration", "certmaint.renewal", "certmaint.keys", "certmaint.options",
                        "certmaint.deploy", "certmaint.storage", "certmaint.storage.file",
                        "certmaint.storage.memory", "certmaint.issuer", "certmaint.issuer.internal" } do
  mods[#mods + 1] = assert(require(name), name)
end
return c.policy { certificates = { "a.test" }, issuer = require("certmaint.issuer.internal").new {} }
]])
    assert(sandbox.load_policy(path))
  end)

  it("gives a policy certmaint.loop's waiting calls, which work in a task, and not its controls", function()
    local loop = require "certmaint.loop"
    local path = write_policy([[
local c = require "certmaint"
local loop = require "certmaint.loop"
assert(loop == c.loop)
assert(loop.reset == nil and loop.run == nil and loop.step == nil and loop.spawn == nil)
local slow = { issue = function() loop.sleep(0.01) loop.yield() return "slept" end }
return c.policy { certificates = { "a.test" }, issuer = slow }
]])
    local p = assert(sandbox.load_policy(path))
    local task = loop.spawn(function() return p.issuer.issue(), loop.in_task() end)
    assert.is_true(loop.run_until(function() return task.done end, { timeout = 5 }))
    assert.is_true(task.done and task.ok, tostring(task.error))
    assert.same({ "slept", true }, { table.unpack(task.results, 1, 2) })
  end)

  it("shows no way to the core through require \"certmaint\"", function()
    local core = require "certmaint.core" -- loaded in this process, as in the daemon
    local LEVERS = { clock_set = true, clock_advance = true, loop_reset = true, log_config = true,
                     log_take = true, step = true }
    local seen
    local path = write_policy([[
local c = require "certmaint"
os.getenv("SEE")(c)
return c.policy { certificates = { "a.test" } }
]])
    assert(sandbox.load_policy(path, { getenv = function(k)
      if k == "SEE" then return function(t) seen = t end end
    end }))
    assert.is_table(seen)
    for _, name in ipairs { "core", "testing", "engine", "jobs", "cli", "hooks", "sandbox" } do
      assert.is_nil(seen[name], name)
    end
    -- the loop as a policy sees it: waiting, not driving
    for _, name in ipairs { "reset", "run", "run_until_idle", "step", "stop", "spawn", "on_signal" } do
      assert.is_nil(seen.loop[name], "loop." .. name)
    end
    -- every public field, one level down: not the core, nor one of its levers
    local levers = {}
    for k in pairs(LEVERS) do levers[core[k]] = k end
    local function scan(t, where, depth)
      for k, v in pairs(t) do
        assert.are_not.equal(core, v, where .. "." .. tostring(k))
        assert.is_nil(levers[v], where .. "." .. tostring(k) .. " is core." .. tostring(levers[v]))
        if type(v) == "table" and depth > 0 then scan(v, where .. "." .. tostring(k), depth - 1) end
      end
    end
    for _, name in ipairs { "duration", "renewal", "keys", "storage", "issuer", "deploy" } do
      assert.is_table(seen[name], name)
    end
    scan(seen, "certmaint", 2)
    assert.is_function(seen.policy)
    assert.is_function(seen.exec)
    assert.is_function(seen.log)
  end)

  -- issue 7 A.2: every policy load runs under the watchdog
  it("A.2 policy load under the watchdog: a top level that loops is stopped with a clear error", function()
    local path = write_policy('while true do end\n')
    local t0 = core.monotonic()
    local p, err = sandbox.load_policy(path, { seconds = 0.2 })
    assert.is_nil(p)
    assert.matches("policy.lua: loading the policy exceeded its time limit of 0.2s", err, 1, true)
    assert.is_true(core.monotonic() - t0 < 2)
    -- a pcall in the policy does not keep it going
    path = write_policy('while true do pcall(function() while true do end end) end\n')
    p, err = sandbox.load_policy(path, { seconds = 0.2 })
    assert.is_nil(p)
    assert.matches("exceeded its time limit", err, 1, true)
    assert.is_false(core.watching())
  end)

  it("A.3 a policy load that grows the heap past its ceiling fails with a clear error", function()
    local path = write_policy('local t = {}\nfor i = 1, 1e9 do t[i] = ("x"):rep(1024) .. i end\n')
    local p, err = sandbox.load_policy(path, { memory_max = 8 * 1024 * 1024 })
    assert.is_nil(p)
    assert.matches("policy.lua: loading the policy ran out of memory (it may add 8 MiB to the heap)", err, 1, true)
    collectgarbage()
  end)

  -- issue 7 A.4: the host out of the policy's reach
  it("A.4 host out of reach: the string metatable and certmaint's metatables are protected", function()
    local env = sandbox.environment("/x/policy.lua")
    local run = function(src) return load(src, "=policy", "t", env)() end
    assert.equal(sandbox.PROTECTED, run('return getmetatable("")'))
    assert.equal(sandbox.PROTECTED, run('return getmetatable(require("certmaint"))'))
    assert.has_error(function() run('setmetatable(require("certmaint"), {})') end)
    -- the policy's own metatables are its own
    assert.is_true(run('local mt = {} local t = setmetatable({}, mt) return getmetatable(t) == mt'))
    assert.equal("x", ("x"):match(".")) -- and the host's strings still work
    assert.is_table(getmetatable("").__index)
  end)

  it("A.4 host out of reach: certmaint's modules and the standard libraries cannot be changed", function()
    local env = sandbox.environment("/x/policy.lua")
    local run = function(src) return load(src, "=policy", "t", env)() end
    local certmaint = require "certmaint"
    local log, renew_at = certmaint.log, require("certmaint.renewal").renew_at
    assert.has_error(function() run('local c = require("certmaint"); c.log = nil') end,
      "certmaint belongs to certmaint: a policy cannot change it (assigning field 'log')")
    assert.has_error(function() run('require("certmaint").renewal.renew_at = nil') end)
    assert.has_error(function() run('require("certmaint.renewal").renew_at = nil') end)
    run('string.format = nil; require("string").rep = nil; table.concat = nil')
    assert.equal(log, certmaint.log)
    assert.equal(renew_at, require("certmaint.renewal").renew_at)
    assert.is_function(string.format)
    assert.is_function(string.rep)
    assert.is_function(table.concat)
    -- reading through the views works as before
    assert.equal(90, run('return require("certmaint").duration.parse("90s")'))
    assert.is_function(run('return require("certmaint.renewal").needs_renewal'))
  end)

  it("A.4 host out of reach: certmaint.core is not reachable", function()
    local path = write_policy('return require "certmaint.core"\n')
    local p, err = sandbox.load_policy(path)
    assert.is_nil(p)
    assert.matches("module 'certmaint.core' is private to certmaint", err, 1, true)
    local env = sandbox.environment("/x/policy.lua")
    assert.has_error(function() load('return debug', "=policy", "t", env)() end)
  end)

  it("A.4 a policy's coroutine.yield leaves only the policy's own coroutines", function()
    local env = sandbox.environment("/x/policy.lua")
    local run = function(src) return load(src, "=policy", "t", env)() end
    assert.equal(3, run('local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 3 end) co(1) return co(1)'))
    local co = coroutine.create(function() return run('coroutine.yield(1)') end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("cannot suspend certmaint's task", err, 1, true)
  end)

  it("A.3 a pathological pattern is bounded, through string.find and through (\"x\"):find", function()
    local env = sandbox.environment("/x/policy.lua")
    local function run(src) return core.watch_call({ seconds = 5 }, load(src, "=policy", "t", env)) end
    for _, src in ipairs {
      'return string.find(("a"):rep(3e4), ("a*"):rep(30) .. "b")',
      'return (("a"):rep(3e4)):find(("a*"):rep(30) .. "b")',
      'return (("a"):rep(3e4)):gsub(("a*"):rep(30) .. "b", "")',
      'for _ in (("a"):rep(3e4)):gmatch(("a*"):rep(30) .. "b") do end',
    } do
      local t0 = core.monotonic()
      local ok, err = run(src)
      assert.is_false(ok, src)
      -- the step bound, or in a slow (sanitized) build the watchdog checked from inside the matcher
      assert.is_truthy(err:find("pattern too complex for this subject", 1, true)
        or err:find("exceeded its time limit of 5s", 1, true), err)
      assert.is_true(core.monotonic() - t0 < 6, src)
    end
    -- ordinary patterns work as before, and the engine's strings keep the stock library
    assert.same({ true, "k", "v" }, { run('return ("k=v"):match("(%w+)=(%w+)")') })
    assert.same({ true, "hell0", 1 }, { run('return string.gsub("hello", "o", "0")') })
    assert.equal(string, getmetatable("").__index)
    assert.equal(20000000, sandbox.PATTERN_STEPS_MAX)
  end)
end)
