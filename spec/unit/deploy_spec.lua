-- certmaint.deploy: certificate files written atomically with their modes, and
-- the reload command run through certmaint's loop with failures reported.
local deploy = require "certmaint.deploy"
local testing = require "certmaint.testing"
local loop = require "certmaint.loop"
local helpers = require "helpers.policies"
local lfs = require "lfs"

local HERE = debug.getinfo(1, "S").short_src

local function cert(name, n)
  n = n or 1
  return { names = { name }, pem = "CHAIN " .. n .. "\n", key_pem = "KEY " .. n .. "\n" }
end

local function perms(path)
  return lfs.attributes(path, "permissions")
end

local function entries(dir)
  local out = {}
  for f in lfs.dir(dir) do
    if f ~= "." and f ~= ".." then out[#out + 1] = f end
  end
  table.sort(out)
  return out
end

-- Run fn(...) in a loop task until everything is idle; returns ok, results/err.
local function in_task(fn, ...)
  local task = loop.spawn(fn, ...)
  loop.run_until_idle()
  assert.is_true(task.done)
  if task.ok then return true, table.unpack(task.results or {}) end
  return false, task.error
end

describe("certmaint.deploy.files", function()
  local dir, logs

  before_each(function()
    dir = helpers.tmpdir()
    logs = testing.capture_logs()
  end)

  after_each(function()
    testing.reset()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function logged(event)
    local out = {}
    for _, line in ipairs(logs()) do
      if line:find("event=" .. event .. " ", 1, true) or line:sub(-#event - 6) == "event=" .. event then
        out[#out + 1] = line
      end
    end
    return out
  end

  describe("files", function()
    it("writes the split layout: fullchain 0644 and privkey 0600 under <dir>/<name>/", function()
      local d = deploy.files { dir = dir }
      assert.is_true(d(cert("a.test")))
      assert.equal("CHAIN 1\n", helpers.read(dir .. "/a.test/fullchain.pem"))
      assert.equal("KEY 1\n", helpers.read(dir .. "/a.test/privkey.pem"))
      assert.equal("rw-r--r--", perms(dir .. "/a.test/fullchain.pem"))
      assert.equal("rw-------", perms(dir .. "/a.test/privkey.pem"))
      assert.same({ "fullchain.pem", "privkey.pem" }, entries(dir .. "/a.test"))
      assert.equal(2, #logged("deployed"))
    end)

    it("writes the haproxy layout: one 0600 file, chain then key", function()
      local d = deploy.files { dir = dir, layout = "haproxy" }
      d(cert("a.test"))
      assert.equal("CHAIN 1\nKEY 1\n", helpers.read(dir .. "/a.test.pem"))
      assert.equal("rw-------", perms(dir .. "/a.test.pem"))
      assert.same({ "a.test.pem" }, entries(dir))
    end)

    it("names a wildcard's files wildcard_, and makes missing folders with dir_mode", function()
      local d = deploy.files { dir = dir .. "/deep/er", dir_mode = "0700" }
      d(cert("*.example.com"))
      assert.equal("KEY 1\n", helpers.read(dir .. "/deep/er/wildcard_.example.com/privkey.pem"))
      assert.equal("rwx------", perms(dir .. "/deep/er/wildcard_.example.com"))
      assert.equal("rwx------", perms(dir .. "/deep"))
    end)

    it("replaces files by rename (a new inode, no temp file left), never in place", function()
      local d = deploy.files { dir = dir }
      d(cert("a.test", 1))
      local ino = lfs.attributes(dir .. "/a.test/privkey.pem", "ino")
      d(cert("a.test", 2))
      assert.equal("KEY 2\n", helpers.read(dir .. "/a.test/privkey.pem"))
      assert.equal("CHAIN 2\n", helpers.read(dir .. "/a.test/fullchain.pem"))
      assert.are_not.equal(ino, lfs.attributes(dir .. "/a.test/privkey.pem", "ino"))
      assert.same({ "fullchain.pem", "privkey.pem" }, entries(dir .. "/a.test"))
      assert.equal("rw-------", perms(dir .. "/a.test/privkey.pem"))
    end)

    it("refuses a certificate without its key and writes nothing", function()
      local d = deploy.files { dir = dir }
      local c = cert("a.test")
      c.key_pem = nil
      assert.error_matches(function() d(c) end, "deploy: the certificate comes without its key", 1, true)
      assert.same({}, entries(dir))
    end)

    it("raises when it cannot write, saying why", function()
      local file = dir .. "/not-a-dir"
      assert(io.open(file, "w")):close()
      local d = deploy.files { dir = file }
      local ok, err = pcall(d, cert("a.test"))
      assert.is_false(ok)
      assert.matches("^deploy: ", err)
    end)
  end)

  describe("reload", function()
    it("runs the command (a string is split on spaces) through the loop after writing", function()
      local marker = dir .. "/reloaded"
      local d = deploy.files { dir = dir .. "/certs", reload = "touch " .. marker }
      local ok, res = in_task(d, cert("a.test"))
      assert.is_true(ok)
      assert.is_true(res)
      assert.is_truthy(lfs.attributes(marker))
      assert.equal(1, #logged("deploy_reloaded"))
    end)

    it("reports a command that fails: logged with its stderr, raised to the hook runner", function()
      local d = deploy.files { dir = dir, reload = { "sh", "-c", "echo broken config >&2; exit 3" } }
      local ok, err = in_task(d, cert("a.test"))
      assert.is_false(ok)
      assert.matches("reload command failed: exit status 3", err, 1, true)
      local lines = logged("deploy_reload_failed")
      assert.equal(1, #lines)
      assert.matches("broken config", lines[1], 1, true)
      -- the files were written before the reload
      assert.equal("KEY 1\n", helpers.read(dir .. "/a.test/privkey.pem"))
    end)

    it("reports a command that cannot run", function()
      local d = deploy.files { dir = dir, reload = { dir .. "/no-such-command" } }
      local ok, err = in_task(d, cert("a.test"))
      assert.is_false(ok)
      assert.matches("reload command failed", err, 1, true)
      assert.equal(1, #logged("deploy_reload_failed"))
    end)

    it("reports a command killed at its timeout", function()
      local d = deploy.files { dir = dir, reload = { "sleep", "5" }, reload_timeout = 0.2 }
      local t0 = os.time()
      local ok, err = in_task(d, cert("a.test"))
      assert.is_false(ok)
      assert.matches("reload command failed", err, 1, true)
      assert.is_true(os.time() - t0 < 5)
    end)

    it("folds renewals that finish while a reload runs into one more reload", function()
      local count = dir .. "/count"
      local d = deploy.files { dir = dir .. "/certs",
        reload = { "sh", "-c", "echo x >> " .. count .. "; sleep 0.3" } }
      local tasks = {}
      tasks[1] = loop.spawn(d, cert("a.test"))
      loop.spawn(function()
        loop.sleep(0.1) -- while the first reload runs
        tasks[2] = loop.spawn(d, cert("b.test"))
        tasks[3] = loop.spawn(d, cert("c.test"))
      end)
      assert.is_true(loop.run_until(function()
        return tasks[1].done and tasks[3] ~= nil and tasks[2].done and tasks[3].done
      end, { timeout = 10 }))
      for i = 1, 3 do
        assert.is_true(tasks[i].done and tasks[i].ok, tostring(tasks[i].error))
      end
      local n = select(2, helpers.read(count):gsub("x", ""))
      assert.equal(2, n)
      for _, name in ipairs { "a.test", "b.test", "c.test" } do
        assert.is_truthy(helpers.read(dir .. "/certs/" .. name .. "/privkey.pem"), name)
      end
    end)

    it("can reload again after a reload raised", function()
      local marker = dir .. "/reloaded"
      local d = deploy.files { dir = dir .. "/certs", reload = { "touch", marker } }
      -- outside a loop task the loop refuses to run the command
      assert.has_error(function() d(cert("a.test")) end)
      assert.is_nil(lfs.attributes(marker))
      local ok = in_task(d, cert("a.test"))
      assert.is_true(ok)
      assert.is_truthy(lfs.attributes(marker))
    end)

    it("does not see later changes to the caller's argv table", function()
      local marker = dir .. "/reloaded"
      local argv = { "touch", marker }
      local d = deploy.files { dir = dir .. "/certs", reload = argv }
      argv[2] = dir .. "/elsewhere"
      assert.is_true((in_task(d, cert("a.test"))))
      assert.is_truthy(lfs.attributes(marker))
    end)
  end)

  describe("options", function()
    local function err_of(opts)
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local d = deploy.files(opts) return d end)
      assert.is_false(ok)
      local prefix = HERE .. ":" .. line .. ": certmaint.deploy.files: "
      assert.equal(prefix, err:sub(1, #prefix))
      return err:sub(#prefix + 1)
    end

    it("names the caller's file:line and the problem", function()
      assert.equal('option "dir" is required', err_of {})
      assert.equal('unknown option "layuot" (did you mean "layout"? known: dir, dir_mode, layout, reload, '
        .. 'reload_timeout, staple)', err_of { dir = dir, layuot = "haproxy" })
      assert.equal('option "layout" must be "split" or "haproxy"', err_of { dir = dir, layout = "apache" })
      assert.equal('option "reload" is empty', err_of { dir = dir, reload = "  " })
      assert.equal('option "reload" is empty', err_of { dir = dir, reload = {} })
      assert.equal('option "reload" [2] must be a string, not number', err_of { dir = dir, reload = { "nginx", 1 } })
      assert.equal('option "reload" must be an argv table or a command string, not boolean',
        err_of { dir = dir, reload = true })
      assert.equal('option "dir_mode" must be an octal string like "0755"', err_of { dir = dir, dir_mode = "755x" })
      assert.matches('^reload_timeout: bad duration "soon"', err_of { dir = dir, reload_timeout = "soon" })
    end)
  end)
end)
