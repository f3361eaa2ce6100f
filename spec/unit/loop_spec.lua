-- certmaint.loop: the scheduler over core.step, and the loop's C API through it.
-- Only 127.0.0.1; every spec leaves nothing pending in the loop.
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local function my_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

-- Run fn in a task until it finishes; returns its results (or raises its error).
local function run(fn, ...)
  local task = loop.spawn(fn, ...)
  assert.is_true(loop.run_until(function() return task.done end, { timeout = 30 }), "task did not finish")
  if not task.ok then error(task.error, 0) end
  return table.unpack(task.results, 1, task.results.n)
end

local function serve()
  local id, port = assert(core.http_serve { listen = "127.0.0.1:0" })
  return id, "http://127.0.0.1:" .. port
end

local function closed_port()
  local id, port = assert(core.http_serve { listen = "127.0.0.1:0" })
  core.http_serve_close(id)
  return port
end

describe("certmaint.loop", function()
  after_each(function()
    -- every spec cleans up after itself: nothing may be left in the loop
    local pending = core.loop_pending()
    loop.reset()
    core.clock_set(nil)
    core.log_config { capture = false }
    core.log_take()
    assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, pending)
    assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
  end)

  describe("tasks", function()
    it("run at the next step and keep their results", function()
      local t = loop.spawn(function(a, b) return a + b, "x", nil end, 1, 2)
      assert.is_false(t.done)
      assert.equal(1, loop.stats().running)
      loop.step(0)
      assert.is_true(t.done)
      assert.is_true(t.ok)
      assert.same({ 3, "x", nil, n = 3 }, t.results)
      assert.equal(0, loop.stats().tasks)
    end)

    it("name themselves", function()
      local t = loop.spawn_named("renew:example.com", function() end)
      assert.equal("renew:example.com", t.name)
      assert.matches("^task#%d+$", loop.spawn(function() end).name)
      loop.run_until_idle()
    end)

    it("may spawn tasks", function()
      local inner
      run(function() inner = loop.spawn(function() return "inner" end) end)
      loop.run_until_idle()
      assert.is_true(inner.done)
      assert.equal("inner", inner.results[1])
    end)

    it("log a failure with its traceback, count it, and never propagate it", function()
      core.log_config { capture = true }
      local function explode() error("boom") end
      local bad = loop.spawn_named("exploder", function() loop.sleep(0) explode() end)
      local good = loop.spawn(function() loop.sleep(0) return "fine" end)
      assert.has_no.errors(function() loop.run_until_idle() end)
      assert.is_true(bad.done)
      assert.is_false(bad.ok)
      assert.matches("boom", bad.error)
      assert.matches("stack traceback", bad.error)
      assert.matches("explode", bad.error)
      assert.is_true(good.ok)
      assert.equal(1, loop.stats().failed)
      local lines = table.concat(core.log_take(), "\n")
      assert.matches("level=error", lines)
      assert.matches("event=task_failed", lines)
      assert.matches("exploder", lines)
      assert.matches("stack traceback", lines)
    end)

    it("close to-be-closed variables of a failed task", function()
      local closed = false
      local t = loop.spawn(function()
        local guard <close> = setmetatable({}, { __close = function() closed = true end })
        loop.sleep(0)
        error({ message = "table error" })
      end)
      loop.run_until_idle()
      assert.is_false(t.ok)
      assert.is_true(closed)
      assert.matches("table error", t.error)
    end)

    it("take a bare coroutine.yield as a cooperative yield", function()
      local order = {}
      loop.spawn(function() order[#order + 1] = "a1" coroutine.yield() order[#order + 1] = "a2" end)
      loop.spawn(function() order[#order + 1] = "b1" loop.yield() order[#order + 1] = "b2" end)
      loop.run_until_idle()
      assert.same({ "a1", "b1", "a2", "b2" }, order)
    end)
  end)

  describe("context checks", function()
    it("refuse waiting calls outside a task", function()
      local ok, err = pcall(loop.http, { url = "http://127.0.0.1:1/" })
      assert.is_false(ok)
      assert.matches("loop.http must be called from a loop task %(loop.spawn%)", err)
      assert.has_error(function() loop.sleep(1) end)
      assert.has_error(function() loop.exec({ "true" }) end)
      assert.has_error(function() loop.wait_signal() end)
      assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
    end)

    it("refuse waiting calls from a coroutine nested in a task", function()
      local err = run(function()
        local co = coroutine.create(function() loop.sleep(0) end)
        local ok, e = coroutine.resume(co)
        assert(not ok)
        return e
      end)
      assert.matches("loop.sleep must be called from a loop task", err)
    end)

    it("refuse driving the loop from inside a task", function()
      local e1, e2 = run(function()
        local _, a = pcall(loop.step, 0)
        local _, b = pcall(loop.reset)
        return a, b
      end)
      assert.matches("must not be called from a loop task", e1)
      assert.matches("must not be called from a loop task", e2)
    end)
  end)

  describe("sleep", function()
    it("follows the fake clock and never moves it", function()
      core.clock_set(1000)
      local woke = {}
      loop.spawn(function() loop.sleep(60) woke[#woke + 1] = "60" end)
      loop.spawn(function() loop.sleep(30) woke[#woke + 1] = "30" end)
      assert.is_true(loop.run_until_idle())
      assert.same({}, woke)
      assert.equal(2, loop.stats().sleeping)
      assert.equal(1000, core.now())
      core.clock_advance(29)
      loop.run_until_idle()
      assert.same({}, woke)
      core.clock_advance(1)
      loop.run_until_idle()
      assert.same({ "30" }, woke)
      core.clock_advance(3600)
      loop.run_until_idle()
      assert.same({ "30", "60" }, woke)
      assert.equal(0, loop.stats().sleeping)
    end)

    it("sleeps on the real clock", function()
      local elapsed = run(function()
        local t0 = core.monotonic()
        loop.sleep(0.05)
        return core.monotonic() - t0
      end)
      assert.is_true(elapsed >= 0.045, "slept " .. elapsed)
    end)

    it("sleep(0) and negative sleeps wake on the next step", function()
      core.clock_set(5)
      local n = 0
      loop.spawn(function() loop.sleep(0) n = n + 1 loop.sleep(-3) n = n + 1 end)
      loop.run_until_idle()
      assert.equal(2, n)
    end)
  end)

  describe("http", function()
    it("talks to the in-loop server: 200, 404, HEAD, headers", function()
      local srv, base = serve()
      assert.is_true(core.http_serve_set(srv, "/.well-known/acme-challenge/tok", "tok.key", "application/octet-stream"))
      local ok, missing, head = run(function()
        return loop.http { url = base .. "/.well-known/acme-challenge/tok" },
          loop.http { url = base .. "/nope" },
          loop.http { url = base .. "/.well-known/acme-challenge/tok", method = "HEAD" }
      end)
      assert.equal(200, ok.status)
      assert.equal("tok.key", ok.body)
      assert.equal("application/octet-stream", ok.headers["content-type"])
      assert.equal("7", ok.headers["content-length"])
      assert.equal(404, missing.status)
      assert.equal(200, head.status)
      assert.equal("", head.body)
      assert.is_true(core.http_serve_unset(srv, "/.well-known/acme-challenge/tok"))
      local gone = run(function() return loop.http { url = base .. "/.well-known/acme-challenge/tok" } end)
      assert.equal(404, gone.status)
      local st = core.http_serve_stats(srv)
      assert.equal(4, st.requests)
      assert.equal(2, st.ok)
      assert.is_true(core.http_serve_close(srv))
      assert.is_false(core.http_serve_close(srv))
    end)

    it("works inside pcall", function()
      local srv, base = serve()
      core.http_serve_set(srv, "/x", "y")
      local ok, resp, caught = run(function()
        local ok, resp = pcall(loop.http, { url = base .. "/x" })
        local ok2, err = pcall(function()
          loop.http { url = base .. "/x" }
          error("after the yield")
        end)
        assert(not ok2)
        return ok, resp, err
      end)
      assert.is_true(ok)
      assert.equal("y", resp.body)
      assert.matches("after the yield", caught)
      core.http_serve_close(srv)
    end)

    it("returns nil, err, code on transport failures", function()
      local srv, base = serve()
      core.http_serve_set(srv, "/big", string.rep("z", 100000))
      local port = closed_port()
      local r1, e1, c1, r2, e2, c2 = run(function()
        local a, b, c = loop.http { url = base .. "/big", max_bytes = 1000 }
        return a, b, c, loop.http { url = "http://127.0.0.1:" .. port .. "/" }
      end)
      assert.is_nil(r1)
      assert.equal("toobig", c1)
      assert.matches("larger than 1000", e1)
      assert.is_nil(r2)
      assert.equal("connect", c2)
      assert.is_string(e2)
      core.http_serve_close(srv)
    end)

    it("refuses bad requests without yielding", function()
      local a, b, c = run(function()
        return loop.http { url = "http://127.0.0.1:1/", protocols = "gopher" }
      end)
      assert.is_nil(a)
      assert.equal("invalid", c)
      assert.is_string(b)
      assert.has_error(function() core.http_request { url = "http://x/", tiemout = 3 } end,
        'core.http_request: unknown option "tiemout" (did you mean "timeout"? known: body, ca_file, '
        .. 'cert_file, connect_timeout, headers, insecure, key_file, max_bytes, method, protocols, '
        .. 'stall_timeout, timeout, url)')
    end)

    it("sends methods, headers and bodies", function()
      local srv, base = serve()
      local resp = run(function()
        return loop.http { url = base .. "/", method = "POST", body = "{}",
          headers = { ["Content-Type"] = "application/jose+json", "X-Extra: 1" } }
      end)
      assert.equal(405, resp.status)
      assert.equal("GET, HEAD", resp.headers["allow"])
      core.http_serve_close(srv)
    end)

    it("runs 150 concurrent transfers, one task each", function()
      local srv, base = serve()
      for i = 1, 150 do core.http_serve_set(srv, "/c/" .. i, "body " .. i) end
      local t = {}
      for i = 1, 150 do
        t[i] = loop.spawn(function()
          local r, err = loop.http { url = base .. "/c/" .. i, timeout = 20 }
          return r and r.status, r and r.body or err
        end)
      end
      assert.equal(0, loop.stats().waiting_io)
      loop.step(0) -- every task starts and waits
      assert.equal(150, loop.stats().waiting_io)
      assert.equal(150, core.loop_pending().http)
      assert.is_true(loop.run_until_idle { timeout = 30 })
      for i = 1, 150 do
        assert.is_true(t[i].ok)
        assert.equal(200, t[i].results[1])
        assert.equal("body " .. i, t[i].results[2])
      end
      assert.equal(0, loop.stats().waiting_io)
      core.http_serve_close(srv)
    end)
  end)

  describe("exec", function()
    it("captures status, output and its bound", function()
      local a, b, c = run(function()
        return loop.exec({ "/bin/sh", "-c", "echo out; echo err >&2; exit 3" }),
          loop.exec({ "/bin/sh", "-c", "head -c 5000 /dev/zero" }, { max_output = 100 }),
          loop.exec({ "cat" }, { stdin = "piped" })
      end)
      assert.equal(3, a.status)
      assert.equal("out\n", a.stdout)
      assert.equal("err\n", a.stderr)
      assert.equal(100, #b.stdout)
      assert.is_true(b.stdout_truncated)
      assert.equal("piped", c.stdout)
    end)

    it("reports a signal death and a missing command", function()
      local a, b, e, code = run(function()
        return loop.exec({ "/bin/sh", "-c", "kill -TERM $$" }), loop.exec({ "/nonexistent/x" })
      end)
      assert.is_nil(a.status)
      assert.equal(15, a.signal)
      assert.is_nil(b)
      assert.equal("ENOENT", code)
      assert.matches("/nonexistent/x", e)
    end)

    it("times out", function()
      local t0 = core.monotonic()
      local r, err, code, partial = run(function()
        return loop.exec({ "/bin/sh", "-c", "echo begun; sleep 10" }, { timeout = 0.3, kill_grace = 0.2 })
      end)
      assert.is_nil(r)
      assert.equal("timeout", code)
      assert.is_string(err)
      assert.equal("begun\n", partial.stdout)
      assert.is_true(core.monotonic() - t0 < 3)
    end)

    it("enforces the timeout itself when the core would not", function()
      -- the core is told 30 s; the scheduler's own deadline must still fire
      local real = core.exec
      core.exec = function(argv, opts)
        local o = {}
        for k, v in pairs(opts) do o[k] = v end
        o.timeout = 30
        return real(argv, o)
      end
      local ok, r, err, code = pcall(run, function()
        return loop.exec({ "sleep", "10" }, { timeout = 0.2, kill_grace = 0 })
      end)
      core.exec = real
      assert.is_true(ok, r)
      assert.is_nil(r)
      assert.equal("timeout", code)
      assert.equal("sleep timed out after 0.2s", err)
      assert.equal(0, core.loop_pending().exec)
    end)

    it("lets run_until_idle wait for I/O but not for sleepers", function()
      local sleeper = loop.spawn(function() loop.sleep(3600) end)
      local worker = loop.spawn(function() return loop.exec({ "/bin/sh", "-c", "sleep 0.2; echo done" }) end)
      local t0 = core.monotonic()
      assert.is_true(loop.run_until_idle { timeout = 10 })
      assert.is_true(core.monotonic() - t0 >= 0.15)
      assert.is_true(worker.done)
      assert.equal("done\n", worker.results[1].stdout)
      assert.is_false(sleeper.done)
      assert.same({ tasks = 1, running = 0, failed = 0, completed = 1, cancelled = 0, sleeping = 1,
        waiting_io = 0, waiting_signal = 0, waiting_cond = 0, timers = 0 }, loop.stats())
      loop.reset()
      assert.is_true(sleeper.done)
      assert.is_false(sleeper.ok)
    end)

    it("run_until_idle gives up after its timeout", function()
      loop.spawn(function() loop.exec({ "sleep", "5" }) end)
      local t0 = core.monotonic()
      assert.is_false(loop.run_until_idle { timeout = 0.2 })
      assert.is_true(core.monotonic() - t0 < 1)
      loop.reset()
    end)
  end)

  describe("run_until", function()
    it("returns false when its timeout passes", function()
      local t0 = core.monotonic()
      assert.is_false(loop.run_until(function() return false end, { timeout = 0.1 }))
      assert.is_true(core.monotonic() - t0 >= 0.09)
    end)

    it("run and stop", function()
      loop.spawn(function() loop.sleep(0.01) loop.stop() end)
      loop.run()
      assert.equal(0, loop.stats().tasks)
    end)

    -- count the C loop's iterations while fn runs
    local function count_steps(fn)
      local real, n = core.step, 0
      core.step = function(...) n = n + 1 return real(...) end
      local ok, err = pcall(fn)
      core.step = real
      if not ok then error(err, 0) end
      return n
    end

    it("sleeps until the next timer instead of waking 4 times a second", function()
      local t = loop.spawn(function() loop.sleep(2) end)
      local t0 = core.monotonic()
      local steps = count_steps(function()
        assert.is_true(loop.run_until(function() return t.done end, { timeout = 10 }))
      end)
      local elapsed = core.monotonic() - t0
      assert.is_true(elapsed >= 1.95, "woke after " .. elapsed .. "s")
      -- one step starts the task, one blocks until the timer and resumes it
      -- (MAX_BLOCK = 0.25 took 9 and more)
      assert.is_true(steps <= 3, steps .. " steps")
      assert.is_true(t.ok)
    end)

    it("wakes for an event without a timer to bound it", function()
      local t = loop.spawn(function() return loop.exec({ "/bin/sh", "-c", "sleep 0.3; echo ok" }) end)
      local steps = count_steps(function()
        assert.is_true(loop.run_until(function() return t.done end))
      end)
      assert.equal("ok\n", t.results[1].stdout)
      -- start, then one per readiness (output, end of output, exit)
      assert.is_true(steps <= 8, steps .. " steps")
    end)

    it("returns false, \"timeout\" on its timeout with a timer further away", function()
      loop.spawn(function() loop.sleep(3600) end)
      local t0 = core.monotonic()
      local ok, why = loop.run_until(function() return false end, { timeout = 0.2 })
      assert.is_false(ok)
      assert.equal("timeout", why)
      assert.is_true(core.monotonic() - t0 >= 0.19)
      assert.is_true(core.monotonic() - t0 < 2)
      loop.reset()
    end)

    it("returns false, \"stalled\" with a fake clock when only fake timers are left", function()
      core.clock_set(1000)
      local t = loop.spawn(function() loop.sleep(60) return "woke" end)
      local t0 = core.monotonic()
      local ok, why = loop.run_until(function() return t.done end)
      assert.is_false(ok)
      assert.equal("stalled", why)
      -- with a timeout too: waiting it out could not help
      ok, why = loop.run_until(function() return t.done end, { timeout = 30 })
      assert.is_false(ok)
      assert.equal("stalled", why)
      assert.is_true(core.monotonic() - t0 < 1)
      assert.equal(1000, core.now()) -- never moved
      core.clock_advance(60)
      assert.is_true(loop.run_until(function() return t.done end))
      assert.equal("woke", t.results[1])
    end)

    it("with a fake clock, still runs a pred that moves the clock itself", function()
      core.clock_set(1000)
      local t = loop.spawn(function() loop.sleep(60) end)
      loop.step(0) -- sleeping from 1000
      local calls = 0
      assert.is_true(loop.run_until(function()
        calls = calls + 1
        if not t.done then core.clock_advance(10) end
        return t.done
      end))
      assert.equal(1060, core.now())
      assert.is_true(calls <= 8, calls .. " calls")
    end)

    it("with a fake clock, blocks for real I/O", function()
      core.clock_set(1000)
      local t = loop.spawn(function()
        loop.sleep(0) -- a fake-clock timer already due
        return loop.exec({ "/bin/sh", "-c", "sleep 0.2; echo io" })
      end)
      assert.is_true(loop.run_until(function() return t.done end, { timeout = 10 }))
      assert.equal("io\n", t.results[1].stdout)
    end)

    it("returns false, \"stalled\" when nothing can ever arrive", function()
      local c = loop.cond()
      local t = loop.spawn(function() return c:wait() end)
      local ok, why = loop.run_until(function() return t.done end)
      assert.is_false(ok)
      assert.equal("stalled", why)
      c:notify()
      assert.is_true(loop.run_until(function() return t.done end))
      assert.is_true(t.results[1])
    end)

    it("wakes from a signal handler when a signal arrives", function()
      local seen
      loop.on_signal(function(name) seen = name end, { "USR1" })
      local killer = loop.spawn(function() loop.exec({ "kill", "-USR1", tostring(my_pid()) }) end)
      assert.is_true(loop.run_until(function() return seen ~= nil end, { timeout = 5 }))
      assert.is_true(loop.run_until(function() return killer.done end, { timeout = 5 }))
      assert.equal("USR1", seen)
      core.signal_unwatch()
    end)
  end)

  describe("signals", function()
    it("calls handlers and wakes waiters", function()
      local seen = {}
      loop.on_signal(function(name) seen[#seen + 1] = name end, { "HUP", "USR1" })
      loop.on_signal(function() error("handler bug") end)
      core.log_config { capture = true }
      local waiter = loop.spawn(function() return loop.wait_signal() end)
      loop.step(0)
      assert.equal(1, loop.stats().waiting_signal)
      run(function() loop.exec({ "kill", "-HUP", tostring(my_pid()) }) end)
      loop.run_until(function() return waiter.done end, { timeout = 5 })
      assert.same({ "HUP" }, seen)
      assert.equal("HUP", waiter.results[1])
      assert.equal(1, loop.stats().failed)
      assert.matches("signal_handler_failed", table.concat(core.log_take(), "\n"))
      core.signal_unwatch()
    end)
  end)

  describe("reset", function()
    it("drops tasks and cancels everything they wait on", function()
      local srv, base = serve()
      local closed = 0
      local function guard() return setmetatable({}, { __close = function() closed = closed + 1 end }) end
      loop.spawn(function() local g <close> = guard() loop.sleep(100) end)
      loop.spawn(function() local g <close> = guard() loop.exec({ "sleep", "10" }) end)
      loop.spawn(function() local g <close> = guard() loop.http { url = base .. "/", timeout = 10 } end)
      core.timer(core.now() + 50)
      loop.step(0)
      local p = core.loop_pending()
      assert.is_true(p.timers >= 3 and p.exec == 1 and p.servers == 1)
      loop.reset()
      assert.equal(3, closed)
      assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
      assert.equal(0, loop.stats().tasks)
      local _ = srv
    end)
  end)

  describe("cancel", function()
    local function guard(log, name)
      return setmetatable({}, { __close = function() log[#log + 1] = name end })
    end

    it("cancels what each task waits on and closes its coroutine", function()
      local srv, base = serve()
      local closed = {}
      local c = loop.cond()
      local t = {
        sleep = loop.spawn(function() local g <close> = guard(closed, "sleep") loop.sleep(100) end),
        exec = loop.spawn(function() local g <close> = guard(closed, "exec") loop.exec({ "sleep", "10" }) end),
        http = loop.spawn(function()
          local g <close> = guard(closed, "http")
          loop.http { url = base .. "/", timeout = 10 }
        end),
        signal = loop.spawn(function() local g <close> = guard(closed, "signal") loop.wait_signal() end),
        cond = loop.spawn(function() local g <close> = guard(closed, "cond") c:wait(100) end),
        yield = loop.spawn(function() local g <close> = guard(closed, "yield") while true do loop.yield() end end),
      }
      loop.step(0)
      local fresh = loop.spawn(function() error("never runs") end)
      assert.same({ tasks = 7, running = 2, failed = 0, completed = 0, cancelled = 0, sleeping = 1,
        waiting_io = 2, waiting_signal = 1, waiting_cond = 1, timers = 0 }, loop.stats())
      local p = core.loop_pending()
      assert.is_true(p.timers >= 4 and p.exec == 1 and p.http == 1)
      for _, name in ipairs { "sleep", "exec", "http", "signal", "cond", "yield" } do
        local task = t[name]
        assert.is_true(loop.cancel(task), name)
        assert.is_true(task.done)
        assert.is_false(task.ok)
        assert.equal("cancelled", task.error)
        assert.equal(name, closed[#closed]) -- its __close ran, at once
      end
      assert.is_true(loop.cancel(fresh)) -- not started yet: it never will
      assert.same({ timers = 0, http = 0, exec = 0, servers = 1 }, core.loop_pending())
      assert.same({ tasks = 0, running = 0, failed = 0, completed = 0, cancelled = 7, sleeping = 0,
        waiting_io = 0, waiting_signal = 0, waiting_cond = 0, timers = 0 }, loop.stats())
      assert.equal(0, c:waiters())
      loop.run_until_idle()
      assert.equal("cancelled", fresh.error)
      assert.equal(0, loop.stats().failed)
      core.http_serve_close(srv)
    end)

    it("returns false for a finished or already cancelled task", function()
      local t = loop.spawn(function() return 1 end)
      loop.run_until_idle()
      assert.is_false(loop.cancel(t))
      assert.is_true(t.ok)
      local s = loop.spawn(function() loop.sleep(10) end)
      assert.is_true(loop.cancel(s))
      assert.is_false(loop.cancel(s))
      assert.equal(1, loop.stats().cancelled)
    end)

    it("works from another task, and a task cannot cancel itself", function()
      local victim = loop.spawn(function() loop.sleep(100) end)
      local me
      me = loop.spawn(function()
        local cancelled = loop.cancel(victim)
        local ok, err = pcall(loop.cancel, me)
        return cancelled, ok, err
      end)
      loop.run_until_idle()
      assert.is_true(me.ok, me.error)
      assert.is_true(me.results[1])
      assert.is_false(me.results[2])
      assert.matches("a task cannot cancel itself", me.results[3])
      assert.equal("cancelled", victim.error)
      assert.has_error(function() loop.cancel({}) end, "loop.cancel: expected a task, got table")
    end)

    it("logs a __close handler that fails or tries to wait, and carries on", function()
      core.log_config { capture = true, level = "debug" }
      local t = loop.spawn(function()
        local g <close> = setmetatable({}, { __close = function() loop.sleep(1) end })
        loop.sleep(100)
      end)
      loop.step(0)
      assert.is_true(loop.cancel(t))
      assert.equal("cancelled", t.error)
      assert.matches("must be called from a loop task", tostring(t.error_value))
      local lines = table.concat(core.log_take(), "\n")
      assert.matches("event=task_close_failed", lines)
      assert.matches("event=task_cancelled", lines)
      assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
    end)

    it("of a task waiting on a fake-clock timer leaves nothing to fire", function()
      core.clock_set(1000)
      local woke = false
      local t = loop.spawn(function() loop.sleep(10) woke = true end)
      loop.step(0)
      loop.cancel(t)
      core.clock_advance(20)
      loop.run_until_idle()
      assert.is_false(woke)
    end)
  end)

  describe("cond", function()
    it("notify wakes one waiter, the longest waiting first; notify_all the rest", function()
      local c = loop.cond()
      local order = {}
      for i = 1, 4 do
        loop.spawn(function() local r = c:wait() order[#order + 1] = { i, r } end)
      end
      loop.run_until_idle()
      assert.equal(4, c:waiters())
      assert.equal(4, loop.stats().waiting_cond)
      assert.equal(1, c:notify()) -- from outside a task
      loop.run_until_idle()
      assert.same({ { 1, true } }, order)
      assert.equal(3, c:notify_all())
      assert.equal(0, c:notify())
      loop.run_until_idle()
      assert.same({ { 1, true }, { 2, true }, { 3, true }, { 4, true } }, order)
      assert.equal(0, loop.stats().waiting_cond)
      assert.equal(0, loop.stats().tasks)
    end)

    it("does not remember a notify that found no waiter", function()
      local c = loop.cond()
      assert.equal(0, c:notify())
      local t = loop.spawn(function() return c:wait(0) end)
      loop.run_until_idle()
      assert.is_false(t.results[1])
    end)

    it("can be notified from a task", function()
      local c = loop.cond()
      local ready = false
      local waiter = loop.spawn(function()
        while not ready do c:wait() end
        return "ready"
      end)
      local notifier = loop.spawn(function()
        loop.sleep(0.01)
        ready = true
        return c:notify()
      end)
      assert.is_true(loop.run_until(function() return waiter.done end, { timeout = 5 }))
      assert.equal("ready", waiter.results[1])
      assert.equal(1, notifier.results[1])
    end)

    it("times out on the fake clock, and a notify beats the timeout", function()
      core.clock_set(1000)
      local c = loop.cond()
      local a = loop.spawn(function() return c:wait(30) end)
      local b = loop.spawn(function() return c:wait(60) end)
      loop.run_until_idle()
      assert.equal(2, core.loop_pending().timers)
      core.clock_advance(30)
      loop.run_until_idle()
      assert.is_true(a.done)
      assert.is_false(a.results[1])
      assert.equal(1, c:waiters())
      assert.equal(1, c:notify()) -- b, not the timed-out a
      loop.run_until_idle()
      assert.is_true(b.results[1])
      assert.equal(0, core.loop_pending().timers) -- b's timeout went with it
    end)

    it("times out on the real clock", function()
      local c = loop.cond()
      local t = loop.spawn(function()
        local t0 = core.monotonic()
        return c:wait(0.05), core.monotonic() - t0
      end)
      assert.is_true(loop.run_until(function() return t.done end, { timeout = 5 }))
      assert.is_false(t.results[1])
      assert.is_true(t.results[2] >= 0.045)
    end)

    it("drops a cancelled waiter", function()
      local c = loop.cond()
      local a = loop.spawn(function() return c:wait(100) end)
      local b = loop.spawn(function() return c:wait() end)
      loop.run_until_idle()
      assert.is_true(loop.cancel(a))
      assert.equal(1, c:waiters())
      assert.equal(1, c:notify())
      loop.run_until_idle()
      assert.is_true(b.results[1])
      assert.same({ timers = 0, http = 0, exec = 0, servers = 0 }, core.loop_pending())
    end)

    it("keeps no trace of waits that timed out", function()
      core.clock_set(1000)
      local c = loop.cond()
      local t = loop.spawn(function()
        for _ = 1, 1000 do c:wait(1) end
        return c:wait()
      end)
      for _ = 1, 1000 do
        loop.run_until_idle()
        core.clock_advance(1)
      end
      loop.run_until_idle()
      assert.equal(1, c:waiters())
      local slots = 0
      for _ in pairs(c.q) do slots = slots + 1 end
      assert.equal(1, slots)
      c:notify_all()
      loop.run_until_idle()
      assert.is_true(t.results[1])
    end)

    it("works inside pcall and refuses to wait outside a task", function()
      local c = loop.cond()
      local t = loop.spawn(function() return pcall(c.wait, c, 5) end)
      loop.run_until_idle()
      c:notify()
      loop.run_until_idle()
      assert.same({ true, true, n = 2 }, t.results)
      assert.has_error(function() c:wait() end, "loop.cond:wait must be called from a loop task (loop.spawn)")
      local bad = loop.spawn(function() return pcall(c.wait, c, "soon") end)
      loop.run_until_idle()
      assert.is_false(bad.results[1])
      assert.matches("timeout must be a number", bad.results[2])
    end)

    it("outlives a loop.reset", function()
      local c = loop.cond()
      loop.spawn(function() c:wait() end)
      loop.run_until_idle()
      loop.reset()
      assert.equal(0, c:waiters())
      assert.equal(0, c:notify())
    end)
  end)

  describe("at", function()
    it("calls fn at the loop top once its time comes, on the fake clock", function()
      core.clock_set(1000)
      local fired = {}
      local t1 = loop.at(1010, function(t) fired[#fired + 1] = t.at end)
      local t2 = loop.at(1005, function(t)
        fired[#fired + 1] = t.at
        assert(not loop.in_task())
        loop.spawn(function() fired[#fired + 1] = "spawned" end)
      end)
      assert.equal(2, loop.stats().timers)
      loop.run_until_idle()
      assert.same({}, fired)
      core.clock_advance(10)
      loop.run_until_idle()
      assert.same({ 1005, 1010, "spawned" }, fired)
      assert.is_false(t1.pending)
      assert.is_false(t2:cancel())
      assert.equal(0, loop.stats().timers)
    end)

    it("can be cancelled, and a failing fn is logged and counted", function()
      core.clock_set(1000)
      core.log_config { capture = true }
      local ran = false
      local t = loop.at(1001, function() ran = true end)
      assert.is_true(t:cancel())
      assert.is_false(t:cancel())
      loop.at(1001, function() error("timer bug") end)
      core.clock_advance(5)
      loop.run_until_idle()
      assert.is_false(ran)
      assert.equal(1, loop.stats().failed)
      assert.matches("event=timer_failed", table.concat(core.log_take(), "\n"))
    end)

    it("wakes a blocked run_until on the real clock", function()
      local fired = false
      loop.at(core.now() + 0.05, function() fired = true end)
      assert.is_true(loop.run_until(function() return fired end, { timeout = 5 }))
    end)

    it("is dropped by loop.reset", function()
      local t = loop.at(core.now() + 100, function() end)
      loop.reset()
      assert.is_false(t.pending)
      assert.is_false(t:cancel())
      assert.equal(0, loop.stats().timers)
    end)
  end)

  describe("core timers", function()
    it("fire in order and can be cancelled", function()
      core.clock_set(100)
      local a, b, c = core.timer(103), core.timer(101), core.timer(102)
      assert.is_true(core.timer_cancel(c))
      assert.is_false(core.timer_cancel(c))
      assert.same({}, core.step(0))
      core.clock_advance(5)
      local evs = core.step(0)
      assert.equal(2, #evs)
      assert.same({ kind = "timer", id = b }, evs[1])
      assert.same({ kind = "timer", id = a }, evs[2])
    end)

    it("deadlines follow real time under a fake clock", function()
      core.clock_set(100)
      local d = core.deadline(0.02)
      local t0 = core.monotonic()
      local got
      while not got and core.monotonic() - t0 < 2 do
        for _, ev in ipairs(core.step(0.1)) do if ev.id == d then got = ev end end
      end
      assert.is_not_nil(got)
      assert.equal(100, core.now())
    end)
  end)
end)
