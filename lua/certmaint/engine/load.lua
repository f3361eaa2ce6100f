--- Start-up: read every managed certificate set from storage into the cache,
-- then obtain what is missing.
--
-- The bulk path: storage:start_load_into_cache hands a batch of certificate
-- keys to cache:add_many_start, which (for the file backend) reads and parses
-- each PEM once in C on the core's threads, computing the default renewal
-- time there too, while Lua binds the previous batch; finish() adds it to the
-- cache. Lua sees only ids, states and two times a certificate. Batches (two
-- in flight at most) bound what is held at once.
local core = require "certmaint.core"
local certset = require "certmaint.certset"
local storage_common = require "certmaint.storage.common"
local issuers = require "certmaint.issuer"
local progress = require "certmaint.progress"

local M = {}

local BATCH = 2048 -- certificates a batch (an engine's load_batch_size overrides it: specs)

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- Bind entry e to cache id (replacing e's previous certificate).
function M:bind(e, id)
  if e.id and e.id ~= id then
    self.cache:remove(e.id)
    self.by_id[e.id] = nil
    self.ari[e.id], self.ari_retry[e.id] = nil, nil -- a window is the old certificate's
  end
  e.id = id
  self.by_id[id] = e
  self.uncached[e.primary] = nil
end

-- The options of a bulk add for entries (names to compare, on-demand flags;
-- the default renewal time computed in C unless a needs_renewal hook decides).
function M:add_opts(entries)
  local names, on_demand = {}, {}
  for i, e in ipairs(entries) do names[i], on_demand[i] = e.names, e.on_demand end
  return { managed = true, on_demand = on_demand, names = names,
    renew = (not self.policy.needs_renewal) and self.renewal_opts or nil }
end

-- With a needs_renewal hook the renewal time comes from the hook, per
-- certificate, in Lua.
function M:hook_renew_times(r, n)
  if not self.policy.needs_renewal then return end
  for i = 1, n do
    local id = r.id[i]
    if id then
      local at = self:renewal_time(self.cache:get(id, { pem = false })) -- the default rule's if the hook fails
      self.cache:set(id, { renew_at = at })
      r.renew_at[i] = at
    end
  end
end

--- Put a certificate PEM into the cache for entry e, replacing e's old one.
-- Returns the cached certificate (as cache:get) | nil, err, code.
function M:cache_put(e, pem)
  local r = self.cache:add_many({ pem }, self:add_opts { e })
  self:hook_renew_times(r, 1)
  local id = r.id[1]
  if not id then return nil, r.error[1], r.code[1] end
  self.cache:set(id, { next_attempt = 0, attempts = 0, last_error = false })
  self:bind(e, id)
  return self.cache:get(id)
end

--- Load every managed certificate from storage into the cache, in batches
-- through storage:start_load_into_cache (for files: the core's threads read
-- and parse batch k+1 while this binds batch k; inserts stay on this thread,
-- in order, so outcomes are those of one load_into_cache per batch).
-- opts.keys = false skips checking that each private key exists,
-- opts.recover = false leaves interrupted commits alone (read-only
-- commands), opts.staples = true (start-up) reads and checks each loaded
-- certificate's stored staple on the core's threads while the next batches
-- load (first_staples, below). Returns counts { ok=, missing=, names_changed=,
-- error=, staples= (attached) },
-- the entries that need obtaining, in policy order, and the seconds it
-- took. On a terminal it shows its progress (certmaint.progress).
function M:load_all(opts)
  local want_keys = not (opts and opts.keys == false)
  local recovered = false
  if not (opts and opts.recover == false) then recovered = select(2, certset.recover(self.storage)) end
  local counts = { ok = 0, missing = 0, names_changed = 0, error = 0 }
  local staples = opts and opts.staples and self:first_staples(core.now()) or nil
  local to_obtain = {}
  local order, entries = self.order, self.entries
  -- at most two batches in flight; a raise drops them (joining their threads)
  local inflight <close> = setmetatable({}, { __close = function(t)
    for _, b in pairs(t) do b.load:drop() end
    if staples then staples.drop() end
  end })
  local size = self.load_batch_size or BATCH
  -- a batch at a time (the parse threads are never asked): on a terminal,
  -- 100k certificates are ~50 updates
  local shown <close> = progress.new("loading certificates", #order * math.max(#self.issuer_keys, 1))
  self.load_progress = shown
  local function start(first, folder)
    if first > #order then return nil end
    local batch, primaries = {}, {}
    for i = first, math.min(first + size - 1, #order) do
      local j = i - first + 1
      primaries[j] = order[i]
      batch[j] = entries[order[i]]
    end
    local o = self:add_opts(batch)
    o.keys = want_keys
    local load = storage_common.start_load_certificates(self.storage, self.cache, folder, primaries, o)
    local b = { entries = batch, load = load }
    inflight[b] = b
    return b
  end
  local folder1 = self.issuer_key
  local cur, first = start(1, folder1), 1
  while cur do
    first = first + size
    local nxt = start(first, folder1)
    local r = cur.load:finish()
    inflight[cur] = nil
    local batch = cur.entries
    self:hook_renew_times(r, #batch)
    local states, ids = r.state, r.id
    for i = 1, #batch do
      local e, state, id = batch[i], states[i], ids[i]
      e.issuer_key = nil -- the first issuer's folder (the other folders come below)
      if id then self:bind(e, id) end
      if recovered and want_keys and state ~= "error" and state ~= "missing" then
        -- a crash cut a commit short: check this set's key pairs with its certificate
        local ok, err = certset.read(self.storage, self:paths(e.primary), e.names, { check_key = true })
        if not ok then state, r.error[i] = "error", err end
      end
      e.load_error = nil
      if state == "error" then
        e.load_error = r.error[i]
        log(r.code[i] == "ENOENT" and "warn" or "error", "load_failed", { name = e.primary,
          error = e.load_error, code = r.code[i], action = "a new certificate will be obtained" })
      end
      if e.names_changed and state == "ok" then state = "names_changed" end
      e.load_state = state
      counts[state] = counts[state] + 1
      if state ~= "ok" then
        to_obtain[#to_obtain + 1] = e
        if not e.id then self.uncached[e.primary] = true end
      end
    end
    if staples then staples.add(ids, #batch) end
    shown:step(#batch, counts.error)
    cur = nxt
  end
  if staples then counts.staples = staples.finish() end
  if #self.issuer_keys > 1 then
    to_obtain = self:load_other_folders(start, inflight, counts, to_obtain, recovered and want_keys)
  end
  self.load_progress = nil
  return counts, to_obtain, shown:seconds()
end

--- An issuer list: the other members' folders, each read in bulk like the
-- first. A certificate found there is taken when the entry has none yet, or
-- when it outlives the one found so far (certmagic loads the newest of its
-- issuers' copies), so no certificate is stranded by a change of issuers.
-- Only policies with several issuers pay for this. Returns to_obtain, pruned.
function M:load_other_folders(start, inflight, counts, to_obtain, check_keys)
  local size = self.load_batch_size or BATCH
  for k = 2, #self.issuer_keys do
    local folder = self.issuer_keys[k]
    local cur, first = start(1, folder), 1
    while cur do
      first = first + size
      local nxt = start(first, folder)
      local r = cur.load:finish()
      inflight[cur] = nil
      local batch = cur.entries
      self:hook_renew_times(r, #batch)
      for i = 1, #batch do
        local e, state, id = batch[i], r.state[i], r.id[i]
        if id and (state == "ok" or state == "names_changed") and id ~= e.id then
          local prev = e.load_state
          local better = not e.id or (prev ~= "ok" and prev ~= "names_changed")
            or r.not_after[i] > select(4, self.cache:facts(e.id))
          if better and check_keys then
            local ok = certset.read(self.storage, self:paths(e.primary, folder), e.names, { check_key = true })
            better = ok and true or false
          end
          if better then
            self:bind(e, id)
            self:set_folder(e, folder)
            e.load_error = nil
            if e.names_changed and state == "ok" then state = "names_changed" end
            counts[prev] = counts[prev] - 1
            counts[state] = counts[state] + 1
            e.load_state = state
            log("debug", "loaded_from_issuer", { name = e.primary, folder = folder })
          elseif not self.by_id[id] then
            self.cache:remove(id) -- an older copy: the one found before serves
          end
        end
      end
      if self.load_progress then self.load_progress:step(#batch, counts.error) end
      cur = nxt
    end
  end
  local still = {}
  for _, e in ipairs(to_obtain) do
    if e.load_state ~= "ok" then still[#still + 1] = e end
  end
  return still
end

--- Start what each issuer serves while the daemon runs (issuer:start: an
-- ACME issuer's standby http-01 listener, for challenges other instances on
-- the storage started). A failure is logged; the daemon goes on without it.
function M:start_issuers()
  for _, m in ipairs(self.issuers) do
    local found, f = pcall(function() return m.start end) -- a strict object may raise on a missing key
    if not found then f = nil end
    if f then
      local ok, res, err, code = pcall(f, m, { storage = self.storage, hooks = self.hooks })
      if not ok or not res then
        log("error", "issuer_start_failed", { issuer = issuers.describe(m),
          error = ok and tostring(err) or tostring(res), code = ok and code or "error" })
      end
    end
  end
end

--- Start-up: load storage, redeploy what the deploy targets do not have,
-- obtain what is missing or whose names changed; then, as background work
-- of start-up (self.started is already true), the staple-only files and one
-- OCSP pass (staples from storage attached, missing ones fetched) unless
-- opts.ocsp == false (`certmaint once` runs its own pass).
-- Runs inside a loop task; waits for the first attempt of each obtain.
function M:start(opts)
  local t0 = core.monotonic()
  local tick = { kind = "start", obtained = 0, loaded = 0, failed = 0, renewed = 0, deployed = 0, deploy_failed = 0 }
  local collector = self:open_collector(tick)
  self:start_issuers()
  local counts, to_obtain, load_seconds = self:load_all { staples = true }
  -- failing renewals keep their back-off across a restart of the daemon, so
  -- a crash loop does not ask the CA at every start (engine/retry.lua);
  -- `once` (opts.restore_backoff = false) is an explicit "maintain now"
  if not (opts and opts.restore_backoff == false) then self:restore_states() end
  tick.loaded = counts.ok
  log("info", "loaded", { certificates = counts.ok, missing = counts.missing,
    names_changed = counts.names_changed, errors = counts.error, seconds = load_seconds })
  self:redeploy_changed(collector) -- what storage holds is what the servers get
  local cands = {}
  for _, e in ipairs(to_obtain) do
    log("info", "obtaining", { name = e.primary, reason = e.load_state })
    cands[#cands + 1] = { e = e, reason = "obtain", not_after = -math.huge }
  end
  self:budget_admit(cands, { queued = 0 }, collector) -- within the CA's order budget (engine/order_budget.lua)
  self:finish_collector(collector)
  tick.obtained = tick.renewed or 0
  tick.renewed = nil
  -- start-up's summary line, the first issuance's included (the load has its
  -- own, `loaded`; the first OCSP pass its `tick`)
  log("info", "started", { loaded = tick.loaded, obtained = tick.obtained, failed = tick.failed,
    deployed = tick.deployed, deploy_failed = tick.deploy_failed,
    seconds = math.floor((core.monotonic() - t0) * 1000 + 0.5) / 1000 })
  self.started = true
  if self:ari_enabled() then
    -- after the load, as background work of start-up: the CA's windows
    -- (stored, then fetched where due), and what a window says to renew now
    local ari_tick = {}
    local c = self:open_collector(ari_tick)
    for _, e in ipairs(self:ari_refresh(core.now(), nil, { reapply = true })) do self:submit(e, "renew", c) end
    self:finish_collector(c)
    tick.renewed = ari_tick.renewed
    tick.failed = tick.failed + (ari_tick.failed or 0)
  end
  if self.load_staple_files then self:load_staple_files() end -- engine/staple_files.lua, where present
  if not (opts and opts.ocsp == false) and not self.stopping and self:ocsp_work(core.now()) then
    local ok, err = pcall(self.tick, self, "ocsp")
    if not ok then log("error", "pass_failed", { kind = "ocsp", error = tostring(err) }) end
  end
  return tick
end

return M
