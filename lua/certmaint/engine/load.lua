--- Start-up: read every managed certificate set from storage into the cache,
-- then obtain what is missing.
--
-- The bulk path: storage:load_many reads a batch of certificates in one call
-- (one C call for the file backend), cache:add_many parses each PEM once in C
-- (on both cores) and adds the batch to the cache, computing the default
-- renewal time there too; Lua sees only ids, states and two times a
-- certificate. Batches bound the PEM bytes held at once.
local core = require "certmaint.core"
local certset = require "certmaint.certset"

local M = {}

local BATCH = 2048

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- Bind entry e to cache id (replacing e's previous certificate).
function M:bind(e, id)
  if e.id and e.id ~= id then
    self.cache:remove(e.id)
    self.by_id[e.id] = nil
  end
  e.id = id
  self.by_id[id] = e
  self.uncached[e.primary] = nil
end

-- With a needs_renewal hook the renewal time comes from the hook (per
-- certificate, in Lua); otherwise cache:add_many computes the default in C.
function M:add_pems(pems, entries)
  local names, on_demand = {}, {}
  for i, e in ipairs(entries) do names[i], on_demand[i] = e.names, e.on_demand end
  local hook = self.policy.needs_renewal
  local r = self.cache:add_many(pems, {
    managed = true, on_demand = on_demand, names = names,
    renew = (not hook) and self.renewal_opts or nil,
  })
  if hook then
    for i = 1, #pems do
      local id = r.id[i]
      if id then
        local at = self:renewal_time(self.cache:get(id, { pem = false }))
        self.cache:set(id, { renew_at = at or 0 })
        r.renew_at[i] = at
      end
    end
  end
  return r
end

--- Put a certificate PEM into the cache for entry e, replacing e's old one.
-- Returns the cached certificate (as cache:get) | nil, err, code.
function M:cache_put(e, pem)
  local r = self:add_pems({ pem }, { e })
  local id = r.id[1]
  if not id then return nil, r.error[1], r.code[1] end
  self.cache:set(id, { next_attempt = 0, attempts = 0, last_error = false })
  self:bind(e, id)
  return self.cache:get(id)
end

--- Load every managed certificate from storage into the cache.
-- opts.keys = false skips looking for the private keys, opts.recover = false
-- leaves interrupted commits alone (read-only commands).
-- Returns counts { ok=, missing=, names_changed=, error= } and the entries
-- that need obtaining, in policy order.
function M:load_all(opts)
  local want_keys = not (opts and opts.keys == false)
  local recovered = false
  if not (opts and opts.recover == false) then recovered = select(2, certset.recover(self.storage)) end
  local counts = { ok = 0, missing = 0, names_changed = 0, error = 0 }
  local to_obtain = {}
  local order = self.order
  for first = 1, #order, BATCH do
    local batch, paths = {}, {}
    for i = first, math.min(first + BATCH - 1, #order) do
      local e = self.entries[order[i]]
      batch[#batch + 1] = e
      paths[#paths + 1] = e.set.crt
      if want_keys then paths[#paths + 1] = e.set.key end
    end
    local found, failed = self.storage:load_many(paths)
    local pems, stored = {}, {}
    for _, e in ipairs(batch) do
      local pem = found[e.set.crt]
      local f = failed[e.set.crt]
      if pem and want_keys and not found[e.set.key] then
        local kf = failed[e.set.key]
        e.load_state, e.load_error = "error", e.set.key .. ": " .. (kf and kf.message or "missing")
        log("warn", "load_failed", { name = e.primary, error = e.load_error .. " (a new certificate will be obtained)" })
      elseif pem then
        pems[#pems + 1], stored[#stored + 1] = pem, e
      elseif f and f.code == "ENOENT" then
        e.load_state = "missing"
      else
        e.load_state, e.load_error = "error", f and f.message or "unreadable"
        log("error", "load_failed", { name = e.primary, error = e.load_error })
      end
    end
    if #pems > 0 then
      local r = self:add_pems(pems, stored)
      for i, e in ipairs(stored) do
        local state = r.state[i]
        if r.id[i] then self:bind(e, r.id[i]) end
        if state == "ok" and recovered and want_keys then
          -- a crash cut a commit short: check this set's key pairs with its certificate
          local ok = certset.read(self.storage, e.set, e.names, { check_key = true })
          if not ok then state = "error" end
        end
        if state == "error" then
          e.load_error = e.load_error or r.error[i]
          log("error", "load_failed", { name = e.primary, error = e.load_error })
        end
        e.load_state = state
      end
    end
    for _, e in ipairs(batch) do
      local state = e.load_state
      if e.names_changed and state == "ok" then state = "names_changed" end
      counts[state] = counts[state] + 1
      if state ~= "ok" then
        to_obtain[#to_obtain + 1] = e
        if not e.id then self.uncached[e.primary] = true end
      end
      e.load_state = state
    end
  end
  return counts, to_obtain
end

--- Start-up: load storage, obtain what is missing or whose names changed.
-- Runs inside a loop task; waits for the first attempt of each obtain.
function M:start()
  local tick = { kind = "start", obtained = 0, loaded = 0, failed = 0, renewed = 0 }
  local collector = self:open_collector(tick)
  local counts, to_obtain = self:load_all()
  tick.loaded = counts.ok
  log("info", "loaded", { certificates = counts.ok, missing = counts.missing,
    names_changed = counts.names_changed, errors = counts.error })
  for _, e in ipairs(to_obtain) do
    log("info", "obtaining", { name = e.primary, reason = e.load_state })
    self:submit(e, "obtain", collector)
  end
  self:finish_collector(collector)
  tick.obtained = tick.renewed or 0
  tick.renewed = nil
  self.started = true
  return tick
end

return M
