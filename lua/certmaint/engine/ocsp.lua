--- The OCSP pass (ocsp_check_interval ticks; DESIGN "OCSP and revocation",
-- "Behaviour to keep").
--
-- The C scan cache:staples_due(now) names the certificates that name a
-- responder, are not expired, and have no staple or one past its refresh
-- time (half its thisUpdate..nextUpdate span, the span's end clamped to the
-- certificate's not_after). For each, with at most ocsp.concurrency at once:
--   1. the staple in storage (certmagic's key, keys.ocsp(name,
--      keys.fast_hash(chain PEM))) if it verifies, is fresh and is newer than
--      the cached one (another instance fetched it): for all of them first,
--      in batches checked and attached on the core's threads
--      (stored_staples_batch, cache:verify_staples_start);
--   2. else the responder (self.responder:ocsp: GET or POST, timeout, size
--      limit), the answer verified against the issuer
--      (core.ocsp_response_parse with now and ocsp.skew), stored, attached;
--   3. on failure the staple we have is kept while its nextUpdate has not
--      passed; one that has passed is taken off the entry (error level).
-- A revoked status goes to handle_revoked (engine/revocation.lua) once the
-- fetches are done. Then the CRL pass and the Must-Staple check, where the
-- engine has them (engine/crl.lua, engine/must_staple.lua).
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"
local progress = require "certmaint.progress"

local M = {}

M.YIELD_EVERY = 32 -- staples a worker checks before it lets the loop run

--- A function to call once per staple handled: every YIELD_EVERY calls it
-- lets the loop run (loop.yield).
function M.pacer()
  local n = 0
  return function()
    n = n + 1
    if n >= M.YIELD_EVERY then
      n = 0
      loop.yield()
    end
  end
end

local function log(level, event, fields) core.log(level, event, fields or {}) end

local BEGIN_CERT, END_CERT = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"

--- The issuer's certificate of a chain PEM (its second certificate, with the
-- newline after it), or nil. Plain finds: a pattern with `.-` over a chain
-- cost ~20 us a certificate, which the OCSP pass pays for each one.
function M.issuer_pem_of(chain_pem)
  local b1 = chain_pem:find(BEGIN_CERT, 1, true)
  local e1 = b1 and chain_pem:find(END_CERT, b1 + #BEGIN_CERT, true)
  local b2 = e1 and chain_pem:find(BEGIN_CERT, e1 + #END_CERT, true)
  local e2 = b2 and chain_pem:find(END_CERT, b2 + #BEGIN_CERT, true)
  if not e2 then return nil end
  local stop = e2 + #END_CERT - 1
  if chain_pem:byte(stop + 1) == 10 then stop = stop + 1 end
  return chain_pem:sub(b2, stop)
end

--- When a staple {this_update, next_update} should be refreshed: half-way
-- through its span, the span ending at the certificate's not_after if that
-- comes first (a staple is of no use past its certificate).
function M.refresh_time(info, not_after)
  local stop = info.next_update
  if not_after and not_after < stop then stop = not_after end
  if stop <= info.this_update then return info.this_update end
  return info.this_update + (stop - info.this_update) / 2
end

--- The storage key of cert's staple: certmagic's (first name, FNV-1a of the PEM chain).
function M.staple_key(cert)
  return keys.ocsp(cert.names[1], keys.fast_hash(cert.pem))
end

-- The pass's settings from the policy's ocsp record (defaults without one).
local function settings(policy)
  local o = policy.ocsp or {}
  return {
    enabled = o.enabled ~= false,
    concurrency = o.concurrency or 16,
    skew = o.skew or 300,
  }
end

--- Where the memo of checked signatures is kept (ocsp.verified_memo; default
-- <storage root>/cache/<host>.ocsp-verified, or under the data dir when one
-- was given and the storage has no root), or nil when off.
function M:verified_memo_path()
  local o = self.policy.ocsp or {}
  if o.verified_memo == false then return nil end
  if o.verified_memo then return o.verified_memo end
  local ok, root = pcall(function() return self.storage.root end) -- a strict backend may raise
  if not ok or type(root) ~= "string" then root = self.opts.data_dir end
  if not root then return nil end -- (memory storage, a spec's engine: nothing written)
  return root .. "/cache/" .. core.hostname() .. ".ocsp-verified"
end

--- The memo of OCSP signatures this host checked already (core.ocsp_memo),
-- opened on first use; false when off or unusable (then every signature is
-- checked: slower, never less safe). A start-up with it checks only the
-- staples it has not seen, ~3x faster at 100k.
function M:verified_memo()
  if self.ocsp_memo ~= nil then return self.ocsp_memo end
  self.ocsp_memo = false
  local path = self:verified_memo_path()
  if not path then return false end
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then core.mkdir_p(dir, "0700") end
  local memo, err, code = core.ocsp_memo(path)
  if not memo then
    log("warn", "ocsp_memo_unusable", { path = path, error = err, code = code,
      action = "every stored staple's signature is checked at each start" })
    return false
  end
  self.ocsp_memo = memo
  return memo
end

-- Write the memo's new records (end of a pass); a failure is a warning: the
-- memo only saves time.
function M:verified_memo_flush()
  local memo = self.ocsp_memo
  if not memo then return end
  local ok, err, code = memo:flush()
  if not ok and not self.ocsp_memo_warned then
    self.ocsp_memo_warned = true
    log("warn", "ocsp_memo_unwritable", { path = self:verified_memo_path(), error = err, code = code })
  end
end

-- Staples fetched and verified this pass, added to the memo at its end by one
-- batch check (a fetched response is checked once more, off the loop thread).
function M:verified_memo_note(id, der)
  if not self:verified_memo() then return end
  local q = self.ocsp_memo_queue
  if not q then
    q = { ids = {}, ders = {} }
    self.ocsp_memo_queue = q
  end
  q.ids[#q.ids + 1], q.ders[#q.ders + 1] = id, der
end

function M:verified_memo_commit(now, cfg)
  local q = self.ocsp_memo_queue
  self.ocsp_memo_queue = nil
  local memo = self.ocsp_memo
  if not memo then return end
  if q then
    for first = 1, #q.ids, M.STAPLE_BATCH do
      local last = math.min(#q.ids, first + M.STAPLE_BATCH - 1)
      local b = self.cache:verify_staples_start(table.move(q.ids, first, last, 1, {}),
        table.move(q.ders, first, last, 1, {}), { now = now, skew = cfg.skew, threads = M.VERIFY_THREADS, memo = memo })
      while not b:ready() do loop.yield() end
      b:finish()
    end
  end
  self:verified_memo_flush()
end

--- Verify `der` as cert's OCSP response at `now`: info | nil, err, code.
-- The core checks signature, responder, CertID and (with now) thisUpdate
-- against skew and nextUpdate; a response without nextUpdate cannot be
-- kept as a staple (it says nothing about how long it holds).
function M:verify_staple(der, cert, issuer_pem, now, skew)
  local info, err, code = core.ocsp_response_parse(der, cert.pem, issuer_pem, now, skew)
  if not info then return nil, err, code end
  -- (its status is still what the responder says: returned fourth, so a
  -- revocation is acted on even when it cannot be stapled)
  if not info.next_update then return nil, "the response has no nextUpdate: it cannot be stapled", "stale", info end
  -- the core checks these too (ocsp-core); checked here as well: never store a stale answer
  if info.next_update <= now then
    return nil, "the response is stale (nextUpdate " .. rfc3339.iso(info.next_update) .. ")", "stale"
  end
  if info.this_update > now + skew then
    return nil, "the response is not yet valid (thisUpdate " .. rfc3339.iso(info.this_update) .. ")", "notyet"
  end
  return info
end

-- Attach a verified staple to cache entry id. Returns the staple table.
function M:attach_staple(id, cert, der, info)
  local staple = { status = info.status, this_update = info.this_update, next_update = info.next_update,
    refresh_at = M.refresh_time(info, cert.not_after), der = der }
  local ok, err = self.cache:set(id, { ocsp = staple })
  if ok == nil then return nil, err end
  return staple
end

--- The lock name of the fetch of the staple stored at key.
function M.staple_lock_name(key) return "ocsp_" .. key:gsub("^.*/", "") end

-- A stored staple at key for cert that is good to use and fresher than the
-- one attached (current): info, der | nil.
function M:stored_staple(key, cert, issuer_pem, current, now, cfg)
  local stored = self.storage:load(key)
  if stored and not (current and stored == current.der) then
    local sinfo = self:verify_staple(stored, cert, issuer_pem, now, cfg.skew)
    if sinfo and sinfo.status ~= "unknown" and M.refresh_time(sinfo, cert.not_after) > now
      and (not current or sinfo.this_update > current.this_update) then
      return sinfo, stored
    end
  end
  return nil
end

-- The staple for one certificate: from storage, else fetched. Records what
-- happened in tick and, for a revoked status, in `revoked` (id -> info).
-- stored_checked: step 1 was done by stored_staples_batch (nothing usable
-- there), so this goes straight to the locked fetch.
function M:refresh_staple(id, now, cfg, tick, revoked, stored_checked)
  local cert = self.cache:get(id)
  if not cert or cert.not_after <= now then return end
  local name = cert.names[1] or id
  local url = cert.ocsp_urls and cert.ocsp_urls[1]
  if not url then
    log("debug", "staple_skipped", { name = name, why = "no OCSP responder named" })
    return
  end
  local current = cert.ocsp
  local issuer_pem = M.issuer_pem_of(cert.pem)
  local key = M.staple_key(cert)
  local info, der, err, code, fetched
  if issuer_pem then
    -- 1. storage: another instance (or Caddy) may have a fresher one
    if not stored_checked then
      info, der = self:stored_staple(key, cert, issuer_pem, current, now, cfg)
      if info then tick.from_storage = tick.from_storage + 1 end
    end
    -- 2. the responder, asked by one instance at a time (try_lock): one busy
    -- with it stores what it gets, and this one takes that at its next pass
    local lock
    if not info then
      lock = self:try_take_lock(M.staple_lock_name(key), "staple_fetch", { fence = false })
      if not lock then
        tick.skipped = (tick.skipped or 0) + 1
        if current and current.next_update <= now then
          -- never served past its nextUpdate, whoever is fetching the next one
          return self:staple_failed(id, cert, url, current, now, "another instance is fetching its successor", "skipped", tick)
        end
        return
      end
    end
    local ok, perr = pcall(function()
      if not lock then return end
      -- read again under the lock: the instance that held it may just have stored one
      info, der = self:stored_staple(key, cert, issuer_pem, current, now, cfg)
      if info then
        tick.from_storage = tick.from_storage + 1
        return
      end
      local req
      req, err, code = core.ocsp_request(cert.pem, issuer_pem)
      if req then
        der, err, code = self.responder:ocsp(url, req, cert, issuer_pem)
        local unstapleable
        if der then info, err, code, unstapleable = self:verify_staple(der, cert, issuer_pem, now, cfg.skew) end
        if unstapleable and unstapleable.status == "revoked" then
          revoked[id] = { status = "revoked", revoked_at = unstapleable.revoked_at, reason = unstapleable.reason,
            source = "ocsp" }
        end
      end
      fetched = info ~= nil
      if fetched then self:verified_memo_note(id, der) end
      if fetched and info.status ~= "unknown" then
        -- stored for the other instances (and Caddy) and for a restart, before the lock goes
        local sok, serr, scode = self.storage:store(key, der)
        if not sok then log("error", "staple_store_failed", { name = name, key = key, error = serr, code = scode }) end
      end
    end)
    if lock then self:release_lock(lock) end
    if not ok then error(perr, 0) end
  else
    err, code = "the chain holds no issuer certificate to verify a response with", "chain"
  end
  if not info then return self:staple_failed(id, cert, url, current, now, err, code, tick) end
  if info.status == "unknown" then
    -- nothing to staple (a client learns nothing from it), nor to store: asked
    -- again next pass; a responder that has not caught up with a new certificate says this
    return self:staple_failed(id, cert, url, current, now, "the responder does not know this certificate",
      "unknown", tick, "staple_unknown")
  end
  local staple, aerr = self:attach_staple(id, cert, der, info)
  if not staple then
    return self:staple_failed(id, cert, url, current, now, "cannot attach: " .. tostring(aerr), "toobig", tick)
  end
  if fetched then tick.refreshed = tick.refreshed + 1 end
  self:staple_attached(id, cert, url, current, der, info, staple.refresh_at, revoked)
end

-- What follows attaching staple `der` (info) to id, which had `current`:
-- logged, a revocation noted, deployed.
function M:staple_attached(id, cert, url, current, der, info, refresh_at, revoked, quiet)
  if not current or info.this_update > current.this_update or current.der ~= der then
    log(quiet and "debug" or "info", "staple_updated", { name = cert.names[1] or id, status = info.status, url = url,
      this_update = rfc3339.iso(info.this_update), next_update = rfc3339.iso(info.next_update),
      refresh_at = rfc3339.iso(math.floor(refresh_at)) })
  end
  if info.status == "revoked" then
    revoked[id] = { status = "revoked", revoked_at = info.revoked_at, reason = info.reason, source = "ocsp" }
  elseif (not current or current.der ~= der) and self:staples_deployed() then
    self:deploy_staple(id, der)
  end
end

-- A failed refresh: the staple we have stays while valid; one whose
-- nextUpdate has passed is taken off (a server must not staple it).
-- `event` (default staple_fetch_failed, error level): staple_unknown is
-- logged at warn level (the responder answered; it does not know the
-- certificate yet), except when a staple is taken off.
function M:staple_failed(id, cert, url, current, now, err, code, tick, event)
  tick.failed = tick.failed + 1
  local fields = { name = cert.names[1] or id, url = url, error = tostring(err), code = code }
  local level = event == "staple_unknown" and "warn" or "error"
  event = event or "staple_fetch_failed"
  if current and current.next_update > now then
    tick.kept = tick.kept + 1
    fields.kept_until = rfc3339.iso(current.next_update)
    log(level, event, fields)
  elseif current then
    self.cache:set(id, { ocsp = false })
    if self.deploy_staple then self:deploy_staple(id, nil) end -- (H4) no stale staple left where servers read it
    tick.removed = tick.removed + 1
    fields.next_update = rfc3339.iso(current.next_update)
    fields.action = "no staple is served until a response is fetched"
    log("error", "staple_expired", fields)
  else
    log(level, event, fields)
  end
end

--- Refresh the staples of `ids` with at most `concurrency` at once; waits
-- for all. Returns id -> revocation info for those found revoked.
-- Step 1 for many certificates at once: their stored staples are read and
-- verified on the core's threads (cache:verify_staples_start; the file
-- backend's files are read there too), and those the pass takes (what
-- stored_staple would return: verified, good or revoked, fresh, newer than
-- the attached one) are attached in C. Batches of STAPLE_BATCH, the next
-- one checked while this one's results are handled. Returns the ids left
-- for the responder (in ids' order); the others are done.
M.STAPLE_BATCH = 512
M.VERIFY_THREADS = 2 -- the cores the daemon is given

-- The few fields of certificate j of a batch the step reads, as a cert table.
local function cert_of(b, j)
  return { names = { b.names[j] }, ocsp_urls = { b.urls[j] }, ocsp = b.current[j] or nil }
end

function M:stored_staples_batch(ids, now, cfg, tick, revoked)
  local storage = self.storage
  local files = type(storage.file_paths) == "function"
  local deployed = self:staples_deployed()
  local want_der = files and deployed
  local left, handled, loaded = {}, {}, {}
  local function prepare(first)
    -- in C (cache:staple_plan): what refresh_staple does not verify from
    -- storage (expired, no responder, no issuer) goes there as it is; each
    -- certificate as the few fields the rest of the step reads of it
    local plan = self.cache:staple_plan(table.move(ids, first, math.min(#ids, first + M.STAPLE_BATCH - 1), 1, {}), now)
    -- b.names/urls/current[j]: what the step reads of certificate j (cert_of
    -- makes its table only where one is needed: 100k tables at start-up)
    local b = { ids = plan.ids, names = plan.names, urls = plan.urls, current = plan.current, keys = plan.keys,
      first = first }
    local list = b.keys
    if not files then
      local found = storage:load_many(b.keys)
      local ids2, names2, urls2, current2, ders = {}, {}, {}, {}, {}
      for j, k in ipairs(b.keys) do
        local der = found[k]
        -- the one attached already is no newer than itself (stored_staple)
        local current = b.current[j]
        if der and not (current and current.der == der) then
          local n = #ids2 + 1
          ids2[n], names2[n], urls2[n], current2[n], ders[n] = b.ids[j], b.names[j], b.urls[j], current, der
        end
      end
      b.ids, b.names, b.urls, b.current, list = ids2, names2, urls2, current2, ders
    else
      list = storage:file_paths(b.keys)
    end
    b.list = list
    b.batch = self.cache:verify_staples_start(b.ids, list, { now = now, skew = cfg.skew,
      threads = M.VERIFY_THREADS, files = files, attach = true, ders = want_der, memo = self:verified_memo() or nil })
    return b
  end
  local function handle(b)
    for _ = 1, 4 do -- the threads are mostly done: let the loop run meanwhile, never spin
      if b.batch:ready() then break end
      loop.yield()
    end
    local r = b.batch:finish()
    local pace = M.pacer()
    local attached, status = r.attached, r.status
    -- a first staple, good, nothing to deploy, no debug line wanted: counted only
    -- (what staple_attached would do; start-up has 100k of them)
    local plain = not deployed and not core.log_wants("debug")
    for j, id in ipairs(b.ids) do
      local current = b.current[j] or nil
      if attached[j] and plain and not current and status[j] == "good" then
        handled[id] = true
        tick.from_storage = tick.from_storage + 1
        loaded.good = (loaded.good or 0) + 1
      elseif attached[j] then
        local cert = cert_of(b, j)
        local url = b.urls[j]
        handled[id] = true
        tick.from_storage = tick.from_storage + 1
        local info = { status = status[j], this_update = r.this_update[j], next_update = r.next_update[j],
          revoked_at = r.revoked_at[j], reason = r.reason[j] }
        local der = files and r.der[j] or (not files and b.list[j]) or nil
        -- the first staple of an entry (start-up: 100k of them) is counted in
        -- one line below, each at debug level; a change is logged as it comes
        local first = current == nil
        if first then loaded[info.status] = (loaded[info.status] or 0) + 1 end
        local ok, err = pcall(self.staple_attached, self, id, cert, url, current, der, info, r.refresh_at[j], revoked,
          first)
        if not ok then log("error", "staple_refresh_failed", { id = id, error = tostring(err) }) end
      elseif r.ok[j] and r.code[j] then
        local cert = cert_of(b, j)
        local url = b.urls[j]
        -- verified and to be attached, but the cache refused it (refresh_staple's "cannot attach")
        handled[id] = true
        self:staple_failed(id, cert, url, cert.ocsp, now, "cannot attach: " .. tostring(r.error[j]), "toobig", tick)
      end
      pace()
    end
  end
  local cur = #ids > 0 and prepare(1) or nil
  while cur do
    local nxt
    if not self.stopping and cur.first + M.STAPLE_BATCH <= #ids then nxt = prepare(cur.first + M.STAPLE_BATCH) end
    local before = tick.from_storage
    local ok, err = pcall(handle, cur)
    if self.ocsp_progress then self.ocsp_progress:step(tick.from_storage - before, tick.failed) end
    if not ok then
      if nxt then nxt.batch:drop() end
      error(err, 0)
    end
    cur = nxt
  end
  if next(loaded) then
    local total = 0
    for _, n in pairs(loaded) do total = total + n end
    log("info", "staples_loaded", { count = total, good = loaded.good, revoked = loaded.revoked,
      unknown = loaded.unknown, from = "storage" })
  end
  for _, id in ipairs(ids) do
    if not handled[id] then left[#left + 1] = id end
  end
  return left
end

--- Start-up's first staples (load_all with staples = true): the stored
-- staple of each certificate just loaded is read and verified on the core's
-- threads while the next batches load, and the good, fresh ones are attached
-- in C (cache:stored_staples_start): no step per staple in Lua, and both
-- cores busy from the start. Whatever is not attached (none stored, damaged,
-- stale, revoked, unknown) is the first OCSP pass's, handled as before. Only
-- with the file backend, where nothing but the cache takes a staple (no
-- staple deploy target or staple file). One line says how many (the pass
-- logs a first staple at debug level only, so none is lost).
-- -> { add = fn(ids, n), finish = fn() -> attached, drop = fn() } | nil
M.FIRST_STAPLES_INFLIGHT = 2 -- batches checked while the load goes on

function M:first_staples(now)
  local cfg = settings(self.policy)
  if not cfg.enabled or self:staples_deployed() then return nil end
  local storage = self.storage
  local ok, root = pcall(function() return type(storage.file_paths) == "function" and storage.root end)
  if not ok or type(root) ~= "string" or root == "" then return nil end
  local opts = { root = root, now = now, skew = cfg.skew, threads = M.VERIFY_THREADS,
    memo = self:verified_memo() or nil }
  local engine, cache, pending, attached, failed = self, self.cache, {}, 0, nil
  local fs = {}
  local function finish_one()
    local r = table.remove(pending, 1):finish()
    attached = attached + r.attached
  end
  function fs.add(ids, n)
    if failed then return end
    local list = {}
    for i = 1, n do
      if ids[i] then list[#list + 1] = ids[i] end
    end
    if #list == 0 then return end
    local b, err, code = cache:stored_staples_start(list, opts)
    if not b then
      failed = true -- (out of memory) the OCSP pass does it all, as before
      log("warn", "staples_preload_failed", { error = err, code = code, action = "the OCSP pass reads them" })
      return
    end
    pending[#pending + 1] = b
    if #pending > M.FIRST_STAPLES_INFLIGHT then finish_one() end
  end
  function fs.finish()
    while #pending > 0 do finish_one() end
    if attached > 0 then
      log("info", "staples_loaded", { count = attached, good = attached, from = "storage" })
      engine:verified_memo_flush() -- what was checked now is not checked at the next start
    end
    return attached
  end
  function fs.drop()
    for _, b in ipairs(pending) do b:drop() end
    pending = {}
  end
  return fs
end

function M:refresh_staples(ids, now, cfg, tick)
  local revoked = {}
  ids = self:stored_staples_batch(ids, now, cfg, tick, revoked)
  local next_i, running = 1, 0
  local done = loop.cond()
  local function worker()
    local pace = M.pacer()
    while next_i <= #ids and not self.stopping do
      local id = ids[next_i]
      next_i = next_i + 1
      local ok, err = pcall(self.refresh_staple, self, id, now, cfg, tick, revoked, true)
      if not ok then
        tick.failed = tick.failed + 1
        log("error", "staple_refresh_failed", { id = id, error = tostring(err) })
      end
      if self.ocsp_progress then self.ocsp_progress:step(1, tick.failed) end
      -- staples taken from storage never wait: without this one worker
      -- would check 100k of them while signals, challenges and the other
      -- passes wait for the loop
      pace()
    end
    running = running - 1
    done:notify_all()
  end
  local workers = math.min(cfg.concurrency, #ids)
  for _ = 1, workers do
    running = running + 1
    loop.spawn_named("ocsp", worker)
  end
  while running > 0 do done:wait() end
  return revoked
end

--- Is there anything for an OCSP pass to do at `now` (a staple due, or a
-- CRL check where the engine does them)? Start-up runs its pass only then,
-- so a store whose certificates name no responder sees no "ocsp" tick.
function M:ocsp_work(now)
  if not settings(self.policy).enabled then return false end
  if #self.cache:staples_due(now, 1) > 0 then return true end
  return (self.crl_pass and self.cache.crl_due and #self.cache:crl_due(now, 1) > 0) or false
end

--- The OCSP pass. Runs inside a loop task. Returns the tick.
function M:ocsp_pass()
  local now = core.now()
  local tick = { kind = "ocsp", at = now, due = 0, refreshed = 0, from_storage = 0, failed = 0, kept = 0,
    revoked = 0, removed = 0 }
  local cfg = settings(self.policy)
  if not cfg.enabled then return tick end
  local ids = self.cache:staples_due(now)
  tick.due = #ids
  -- on a terminal: staples taken from storage a batch at a time, then each fetch
  local shown <close> = progress.new("OCSP staples", #ids)
  self.ocsp_progress = shown
  local revoked = self:refresh_staples(ids, now, cfg, tick)
  self.ocsp_progress = nil
  if next(revoked) then
    -- the replacements' first attempts are waited for (their counts apart:
    -- tick.failed counts fetches)
    local jobs_tick = {}
    local collector = self:open_collector(jobs_tick)
    for _, id in ipairs(ids) do -- in scan order: the log reads the same each run
      local info = revoked[id]
      if info then
        tick.revoked = tick.revoked + 1
        self:handle_revoked(id, info, collector)
      end
    end
    self:finish_collector(collector)
    -- the replacements are stapled in this pass, not an interval later
    local seen, fresh = {}, {}
    for _, id in ipairs(ids) do seen[id] = true end
    for _, id in ipairs(self.cache:staples_due(now)) do
      if not seen[id] and self.by_id[id] then fresh[#fresh + 1] = id end
    end
    if #fresh > 0 then
      tick.due = tick.due + #fresh
      local again = self:refresh_staples(fresh, now, cfg, tick)
      collector = self:open_collector(jobs_tick)
      for _, id in ipairs(fresh) do -- a replacement revoked already (the CA revoked it too): handled as well
        if again[id] then
          tick.revoked = tick.revoked + 1
          self:handle_revoked(id, again[id], collector)
        end
      end
      self:finish_collector(collector)
    end
    tick.replaced = (jobs_tick.renewed or 0) + (jobs_tick.reloaded or 0)
    tick.replace_failed = jobs_tick.failed or 0
  end
  self:verified_memo_commit(now, cfg)
  if self.crl_pass then self:crl_pass(now, tick) end
  if self.must_staple_check then self:must_staple_check(now, tick) end
  return tick
end

return M
