--- certmaint.bench.figures: the figures of certmaint-bench, each through the
-- daemon's own code (certmaint.bench has the command line).
--
-- One engine per issuer folder of the tree (certificates/<issuer>/), with the
-- file storage at the tree, an issuer that fails at once and a responder that
-- fails at once (no CA, no network: what is timed is certmaint's own work).
-- Figures run in this order whatever order they are asked in, each on what
-- the ones before it left (as a daemon's first minutes would):
--   load          engine.new + load_all: every certificate read, parsed
--                 (chain, metadata; the key's presence checked, as start-up does) and cached
--   load_staples  a fresh load as start-up does it: each certificate's stored
--                 staple read, parsed, verified and attached while the load goes
--                 on, then the first OCSP pass for what was left
--   scan_due      one renew pass finding the due ones; their jobs run to their
--                 end against the failing issuer (each failure recorded)
--   scan          one renew pass with nothing due (the due ones are waiting to
--                 retry, as in a daemon's steady state)
--   ocsp          parse + verify one stored DER response per certificate against its
--                 issuer, as the OCSP pass does (cache:verify_staples, 2 threads)
--   ocsp_noverify the same without the signature check (verify = false)
--   clean         the clean pass deleting expired certificates (no grace), on a
--                 hard-linked copy of the tree; N = certificates stored
--   clean_ocsp    the clean pass deleting stale staples only; N = staples stored
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local measure = require "certmaint.bench.measure"
local lfs = require "lfs"

local M = {}

M.ORDER = { "load", "load_staples", "scan_due", "scan", "ocsp", "ocsp_noverify", "clean", "clean_ocsp" }

local function say(fmt, ...) io.stderr:write(("certmaint-bench: " .. fmt .. "\n"):format(...)) end

-- ---- the tree ------------------------------------------------------------------

--- The issuer folders under dir/certificates and, per folder, the names of its
-- site folders (certmagic writes "*." as "wildcard_.").
-- -> list of { issuer_key =, names = } | nil, err
function M.scan_tree(dir)
  local root = dir .. "/" .. keys.CERTS_PREFIX
  if lfs.attributes(root, "mode") ~= "directory" then
    return nil, dir .. ": no certificates/ folder here (not a storage tree in certmagic's file layout)"
  end
  local folders = {}
  for issuer in lfs.dir(root) do
    local idir = root .. "/" .. issuer
    if issuer:sub(1, 1) ~= "." and lfs.attributes(idir, "mode") == "directory" then
      local names = {}
      -- the site folders' names (no stat each: a folder without its .crt is
      -- the load's "missing", reported there)
      for site in lfs.dir(idir) do
        if site:sub(1, 1) ~= "." then names[#names + 1] = (site:gsub("^wildcard_%.", "*.")) end
      end
      table.sort(names)
      if #names > 0 then folders[#folders + 1] = { issuer_key = issuer, names = names } end
    end
  end
  table.sort(folders, function(a, b) return a.issuer_key < b.issuer_key end)
  if #folders == 0 then return nil, root .. ": no certificates in it (<issuer>/<name>/<name>.crt)" end
  return folders
end

--- The stored staples (keys under ocsp/) of the tree.
local function staple_keys(storage)
  return storage:list(keys.OCSP_PREFIX, true) or {}
end

-- ---- the stand-ins for the CA and the responder ---------------------------------

local function failing_issuer(issuer_key)
  return {
    issue = function() return nil, "certmaint-bench: the issuer fails at once", "bench" end,
    storage_key = function() return issuer_key end,
    describe = function() return "certmaint-bench failing issuer (" .. issuer_key .. ")" end,
  }
end

local FAILING_RESPONDER = {
  ocsp = function() return nil, "certmaint-bench: the responder fails at once", "bench" end,
  crl = function() return nil, "certmaint-bench: the CRL server fails at once", "bench" end,
}

--- The policy of one issuer folder (names: the folder's unless given).
function M.policy(dir, folder, opts)
  local certmaint = require "certmaint"
  opts = opts or {}
  return certmaint.policy {
    certificates = opts.names or folder.names,
    storage = certmaint.storage.file { root = dir },
    issuer = failing_issuer(folder.issuer_key),
    log = { level = opts.log_level or "error" },
    ocsp = { crl_checks = false },
    clean = { expired_cert_grace_period = 0, ocsp_staples = opts.clean_staples ~= false,
      expired_certs = opts.clean_certs ~= false },
  }
end

-- ---- a run ------------------------------------------------------------------------

local Run = {}
Run.__index = Run

function M.new(dir, opts)
  -- the log is captured and summed up after each figure (untimed): the
  -- stand-in responder's failures would otherwise be a line per certificate
  core.log_config { level = opts and opts.log_level or "error", capture = true, echo = false }
  local folders, err = M.scan_tree(dir)
  if not folders then return nil, err end
  local self = setmetatable({ dir = dir, opts = opts or {}, folders = folders, total = 0 }, Run)
  for _, f in ipairs(folders) do self.total = self.total + #f.names end
  return self
end

--- The log lines of the last figure: how many, and the first few, on stderr.
function Run:drain_log(figure)
  local lines = core.log_take()
  if #lines == 0 then return end
  local events = {}
  for _, l in ipairs(lines) do
    local ev = l:match("event=(%S+)") or "?"
    events[ev] = (events[ev] or 0) + 1
  end
  local parts = {}
  for ev, n in pairs(events) do parts[#parts + 1] = ev .. "=" .. n end
  table.sort(parts)
  say("%s: %d log lines (%s); first: %s", figure, #lines, table.concat(parts, " "), lines[1])
end

function Run:emit(figure, n, seconds, peak)
  self:drain_log(figure)
  io.stdout:write(measure.result_line(figure, n, seconds, peak), "\n")
  io.stdout:flush()
end

-- Engines over dir, loaded: one per folder. load_opts: load_all's (start-up
-- passes staples = true). -> engines, loaded, staples attached while loading
function Run:load_engines(dir, opts, load_opts)
  local engine_mod = require "certmaint.engine"
  local engines, loaded, failed, staples = {}, 0, 0, 0
  for _, folder in ipairs(self.folders) do
    local e = engine_mod.new(M.policy(dir, folder, opts), { responder = FAILING_RESPONDER })
    local counts = e:load_all(load_opts)
    loaded = loaded + counts.ok
    staples = staples + (counts.staples or 0)
    failed = failed + counts.error + counts.missing + counts.names_changed
    engines[#engines + 1] = e
  end
  if failed > 0 then say("%d of %d certificates did not load (the log says why)", failed, loaded + failed) end
  return engines, loaded, staples
end

-- Start-up's OCSP pass on each engine: the stored staples attached, a fetch
-- tried (through its lock) for those with none usable. -> attached, due,
-- seconds spent in the pass's stored-staple step (engine/ocsp.lua
-- stored_staples_batch, timed around the engine's own method)
local function ocsp_passes(engines)
  local attached, due, stored_s = 0, 0, 0
  for _, e in ipairs(engines) do
    e.stored_staples_batch = function(eng, ...)
      local t0 = core.monotonic()
      local r = table.pack(getmetatable(eng).__index.stored_staples_batch(eng, ...))
      stored_s = stored_s + core.monotonic() - t0
      return table.unpack(r, 1, r.n)
    end
    local t = e:tick("ocsp")
    e.stored_staples_batch = nil
    attached, due = attached + (t.from_storage or 0), due + (t.due or 0)
  end
  return attached, due, stored_s
end

local function renew_passes(engines)
  local due, failed = 0, 0
  for _, e in ipairs(engines) do
    local t = e:tick("renew")
    due, failed = due + (t.due or 0), failed + (t.failed or 0)
  end
  return due, failed
end

function Run:fig_load()
  self.engines = nil
  local seconds, peak, engines, loaded = measure.timed(function() return self:load_engines(self.dir, self.opts) end)
  self.engines = engines
  self:emit("load", loaded, seconds, peak)
end

function Run:fig_load_staples()
  self.engines = nil
  local attached, due, stored_s, load_s, preloaded
  local seconds, peak, engines, loaded = measure.timed(function()
    local t0 = core.monotonic()
    -- as start-up does: the stored staples checked while the load goes on
    local engines, loaded, staples = self:load_engines(self.dir, self.opts, { staples = true })
    load_s, preloaded = core.monotonic() - t0, staples
    attached, due, stored_s = ocsp_passes(engines)
    return engines, loaded
  end)
  self.engines = engines
  say("load_staples: %d staples attached while loading, %d by the OCSP pass from storage (%d certificates "
    .. "still needed one); load with staples %.3f s, the pass's stored-staple step %.3f s, fetch attempts for the "
    .. "rest %.3f s", preloaded, attached, due, load_s, stored_s, seconds - load_s - stored_s)
  self:emit("load_staples", loaded, seconds, peak)
end

function Run:base()
  if not self.engines then self.engines = self:load_engines(self.dir, self.opts) end
  return self.engines
end

function Run:fig_scan_due()
  local engines = self:base()
  -- when the pass starts waiting for its jobs (engine/renew.lua
  -- finish_collector): the scan and queueing are done then
  local started, queued_at = core.monotonic(), nil
  for _, e in ipairs(engines) do
    e.finish_collector = function(eng, c)
      queued_at = queued_at or core.monotonic()
      return getmetatable(eng).__index.finish_collector(eng, c)
    end
  end
  local seconds, peak, due, failed = measure.timed(function()
    started = core.monotonic()
    return renew_passes(engines)
  end)
  for _, e in ipairs(engines) do e.finish_collector = nil end
  self.due_done = true
  local queue_s = (queued_at or started) - started
  say("scan_due: %d due, %d renewals failed against the failing issuer; scan + queue %.3f s (%.3f us a "
    .. "certificate), the jobs to their end %.3f s (%.1f us a due job)", due, failed, queue_s,
    queue_s / math.max(self.total, 1) * 1e6, seconds - queue_s, (seconds - queue_s) / math.max(due, 1) * 1e6)
  self:emit("scan_due", self.total, seconds, peak)
end

function Run:fig_scan()
  local engines = self:base()
  if not self.due_done then renew_passes(engines) self.due_done = true end -- the due ones now wait to retry
  local seconds, peak, due = measure.timed(function() return renew_passes(engines) end)
  if due > 0 then say("scan: %d were due all the same", due) end
  self:emit("scan", self.total, seconds, peak)
end

-- Every certificate with a stored staple: { {der =, cert = PEM chain, issuer = PEM} ... }
function Run:staple_items()
  local engines = self:base()
  local ocsp = require "certmaint.engine.ocsp"
  local items = {}
  for _, e in ipairs(engines) do
    local ids, wanted = {}, {}
    for _, primary in ipairs(e.order) do
      local id = e.entries[primary].id
      if id then
        local cert = e.cache:get(id)
        ids[#ids + 1] = { id = id, cert = cert, key = ocsp.staple_key(cert) }
        wanted[#wanted + 1] = ids[#ids].key
      end
    end
    local found = e.storage:load_many(wanted)
    for _, it in ipairs(ids) do
      local der = found[it.key]
      if der then
        items[#items + 1] = { id = it.id, der = der, cert = it.cert, issuer = ocsp.issuer_pem_of(it.cert.pem),
          engine = e }
      end
    end
  end
  return items
end

-- What the OCSP pass runs on the core's threads for stored staples
-- (cache:verify_staples, engine/ocsp.lua stored_staples_batch): each DER
-- parsed and verified against its certificate's issuer, on 2 threads, in
-- batches of the pass's size; or parsed only (verify = false).
M.OCSP_BATCH = 512
function Run:fig_ocsp(verify)
  local items = self:staple_items()
  local now = core.now()
  local good = 0
  local seconds, peak = measure.timed(function()
    local by_engine = {}
    for _, it in ipairs(items) do
      local list = by_engine[it.engine]
      if not list then list = { ids = {}, ders = {} } by_engine[it.engine] = list end
      list.ids[#list.ids + 1], list.ders[#list.ders + 1] = it.id, it.der
    end
    for e, list in pairs(by_engine) do
      for first = 1, #list.ids, M.OCSP_BATCH do
        local last = math.min(first + M.OCSP_BATCH - 1, #list.ids)
        local r = e.cache:verify_staples(table.move(list.ids, first, last, 1, {}), table.move(list.ders, first, last, 1, {}),
          { now = now, skew = 300, threads = 2, verify = verify })
        for i = 1, last - first + 1 do
          if r.ok[i] and (not verify or (r.next_update[i] and r.next_update[i] > now)) then good = good + 1 end
        end
      end
    end
  end)
  say("%s: %d of %d responses %s", verify and "ocsp" or "ocsp_noverify", good, #items,
    verify and "verified and fresh" or "parsed and fresh")
  self:emit(verify and "ocsp" or "ocsp_noverify", #items, seconds, peak)
end

-- A hard-linked copy of the tree in a fresh temporary folder (untimed).
function Run:scratch_copy()
  local tmp = os.tmpname()
  os.remove(tmp)
  local cmd = ("cp -al %q %q"):format(self.dir, tmp)
  local ok = os.execute(cmd)
  if not ok then error("certmaint-bench: cannot copy the tree for a clean figure: " .. cmd, 0) end
  return tmp
end

local function remove_tree(dir)
  os.execute(("rm -rf %q"):format(dir))
end

function Run:clean_figure(figure, opts)
  local copy = self:scratch_copy()
  local ok, err = pcall(function()
    local engine_mod = require "certmaint.engine"
    local e = engine_mod.new(M.policy(copy, self.folders[1], {
      names = {}, clean_staples = opts.staples, clean_certs = opts.certs, log_level = self.opts.log_level,
    }), { responder = FAILING_RESPONDER })
    local n = opts.certs and self.total or #staple_keys(e.storage)
    local seconds, peak, tick = measure.timed(function() return e:tick("clean") end)
    if tick.skipped then error("certmaint-bench: the clean pass was skipped: " .. tick.skipped, 0) end
    say("%s: %d certificates deleted, %d kept, %d staples deleted", figure, tick.deleted or 0, tick.kept or 0,
      tick.staples_deleted or 0)
    local phases = {}
    for key, s in pairs(tick) do
      local phase = type(key) == "string" and key:match("^seconds_(.+)$")
      if phase then phases[#phases + 1] = ("%s %.3f s"):format(phase, s) end
    end
    table.sort(phases)
    say("%s: time by step: %s", figure, table.concat(phases, ", "))
    self:emit(figure, n, seconds, peak)
  end)
  remove_tree(copy)
  if not ok then error(err, 0) end
end

function Run:fig_clean() self:clean_figure("clean", { certs = true, staples = false }) end
function Run:fig_clean_ocsp() self:clean_figure("clean_ocsp", { certs = false, staples = true }) end

--- Run the figures asked for (a set of names), in M.ORDER, inside a loop task.
-- Every file of the tree read once (untimed): the figure after it runs on a
-- warm page cache (the machines here page out what was not touched for a
-- minute, a 2 GB tree among it).
function Run:warm()
  local t0 = core.monotonic()
  local ok = os.execute(("find %q -type f -print0 | xargs -0 -r cat > /dev/null"):format(self.dir))
  if not ok then error("certmaint-bench: --warm: cannot read the tree " .. self.dir, 0) end
  say("warm: the tree read in %.1f s", core.monotonic() - t0)
end

function Run:run(wanted)
  local set = {}
  for _, f in ipairs(wanted) do set[f] = true end
  say("%s: %d certificates in %d issuer folder(s)", self.dir, self.total, #self.folders)
  local task = loop.spawn_named("bench", function()
    for _, f in ipairs(M.ORDER) do
      if set[f] then
        if self.opts.warm then self:warm() end
        if f == "ocsp" then self:fig_ocsp(true)
        elseif f == "ocsp_noverify" then self:fig_ocsp(false)
        else self["fig_" .. f](self) end
      end
    end
  end)
  loop.run_until(function() return task.done end)
  if not task.ok then error(task.error, 0) end
  return 0
end

return M
