--- Storage backends for the contract spec, and file-system helpers.
--
-- Each backend has a name, make() -> {a, b}, cleanup, root: two instances
-- ("a" and "b", different lock owners) on the SAME data, as two certmaint
-- processes sharing one storage would be; and reopen(s) -> a NEW instance on
-- s's data (a restarted process, a new lock owner); reset(s) empties s's
-- data (locks and tokens too); staged(s) lists what commit's journal holds
-- (empty when nothing is pending).  The contract spec
-- (spec/contract/storage_spec.lua) runs against every backend listed here:
-- a new backend only has to be added to M.backends.  journal = false marks
-- a backend whose commit is one atomic request (etcd): the contract's
-- crash-between-steps checks are about a journal it does not have (its
-- own spec checks a crash before and after that one request).
local core = require "certmaint.core"
local lfs = require "lfs"

local M = {}

--- A fresh private directory under $TMPDIR (or /tmp).
function M.tmpdir()
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local hex = core.sha256_hex(core.random_bytes(16)):sub(1, 16)
  local dir = base .. "/certmaint-spec-" .. hex
  assert(core.mkdir_p(dir, "0700"))
  return dir
end

--- Remove a directory tree (tests restore what they made read-only).
function M.rm_rf(path)
  local mode = lfs.symlinkattributes(path, "mode")
  if not mode then return end
  if mode == "directory" then
    for name in lfs.dir(path) do
      if name ~= "." and name ~= ".." then M.rm_rf(path .. "/" .. name) end
    end
    assert(lfs.rmdir(path))
  else
    assert(os.remove(path))
  end
end

--- Every name below dir (relative paths), files and directories, sorted.
function M.walk(dir, prefix, out)
  out = out or {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local rel = prefix and prefix .. "/" .. name or name
      out[#out + 1] = rel
      if lfs.symlinkattributes(dir .. "/" .. name, "mode") == "directory" then
        M.walk(dir .. "/" .. name, rel, out)
      end
    end
  end
  table.sort(out)
  return out
end

local is_root = io.popen("id -u"):read("l") == "0"

--- Make dir refuse new files: chmod 0500, or (as root, who ignores modes)
-- the immutable attribute.  Returns true if the directory now really refuses
-- a new file, false if this system cannot do that.
function M.make_readonly(dir)
  if is_root then
    os.execute("chattr +i '" .. dir .. "' 2>/dev/null")
  else
    os.execute("chmod 0500 '" .. dir .. "'")
  end
  local probe = dir .. "/.probe"
  local f = io.open(probe, "w")
  if f then
    f:close()
    os.remove(probe)
    M.make_writable(dir)
    return false
  end
  return true
end

function M.make_writable(dir)
  if is_root then os.execute("chattr -i '" .. dir .. "' 2>/dev/null") end
  os.execute("chmod 0700 '" .. dir .. "' 2>/dev/null")
end

M.backends = {
  {
    name = "memory",
    make = function()
      local memory = require "certmaint.storage.memory"
      local a = memory.new()
      return { a, memory.new { share = a } }, function() end
    end,
    reopen = function(s, opts)
      local o = { share = s }
      for k, v in pairs(opts or {}) do o[k] = v end
      return require("certmaint.storage.memory").new(o)
    end,
    reset = function(s)
      for _, t in pairs(s.state) do
        for k in pairs(t) do t[k] = nil end
      end
    end,
    staged = function(s)
      local out = {}
      for id in pairs(s.state.journal) do out[#out + 1] = id end
      table.sort(out)
      return out
    end,
  },
  {
    name = "file",
    make = function()
      local file = require "certmaint.storage.file"
      local dir = M.tmpdir()
      -- max_skew = 0: the contract times certmagic's rule (stale 10 s after the
      -- holder's last update by the wall clock); the default's skew tolerance
      -- has its own spec (spec/unit/time_skew_spec.lua)
      return { file.new { root = dir, max_skew = 0 }, file.new { root = dir, max_skew = 0 } },
        function() M.rm_rf(dir) end, dir
    end,
    reopen = function(s, opts)
      local o = { root = s.root, max_skew = 0 }
      for k, v in pairs(opts or {}) do o[k] = v end
      return require("certmaint.storage.file").new(o)
    end,
    reset = function(s)
      for name in lfs.dir(s.root) do
        if name ~= "." and name ~= ".." then M.rm_rf(s.root .. "/" .. name) end
      end
    end,
    staged = function(s)
      local journal = s.root .. "/journal"
      if not lfs.attributes(journal) then return {} end
      return M.walk(journal)
    end,
  },
  {
    -- a real etcd (spec/helpers/etcd.lua), each make() under a fresh prefix;
    -- stale_after as the other backends' so the spec's clock moves its locks
    -- stale too (the leases, lock_ttl 30 s of real time, outlive each test)
    name = "etcd",
    journal = false, -- a commit is one etcd txn: no staging to crash in
    make = function()
      local etcd = require "helpers.etcd"
      local server = etcd.shared()
      local a = etcd.storage(server, { stale_after = 10 })
      local b = require("certmaint.storage.etcd").new { endpoints = { server.url },
        prefix = a.prefix, stale_after = 10 }
      return { a, b }, function()
        for _, s in ipairs { a, b } do s:close() end
        a:delete_prefix()
      end
    end,
    reopen = function(s, opts)
      local o = { endpoints = s.endpoints, prefix = s.prefix, stale_after = s.stale_after }
      for k, v in pairs(opts or {}) do o[k] = v end
      return require("certmaint.storage.etcd").new(o)
    end,
    reset = function(s) assert(s:delete_prefix()) end,
    staged = function() return {} end,
  },
}

--- Run fn inside a coroutine that looks like a loop task to the backends:
-- package.loaded["certmaint.loop"] is replaced (and restored) by a fake
-- whose sleep(s) advances the fake clock by s and calls on_sleep(n, s).
function M.in_fake_task(on_sleep, fn)
  local saved = package.loaded["certmaint.loop"]
  local sleeps = 0
  package.loaded["certmaint.loop"] = {
    in_task = function() return true end,
    sleep = function(s)
      sleeps = sleeps + 1
      core.clock_advance(s)
      if on_sleep then on_sleep(sleeps, s) end
    end,
  }
  local co = coroutine.create(fn)
  local results = table.pack(coroutine.resume(co))
  package.loaded["certmaint.loop"] = saved
  if not results[1] then error(results[2], 0) end
  return sleeps, table.unpack(results, 2, results.n)
end

return M
