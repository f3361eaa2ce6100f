--- The order budget: new orders per CA account held under sliding-window
-- limits (the policy's `order_budget`; by default Let's Encrypt's published
-- limits for ACME issuers), so that a storm of due renewals is spread over
-- time instead of being refused by the CA.
--
-- Two places use it:
-- - The renew pass admits due certificates (budget_admit): earliest expiring
--   first, no more than the budget has room for, and no more queued or
--   running at once than the job concurrency (so 1,000 due at once start as
--   slots free, not in one burst). The rest wait — not failed, no back-off —
--   and one `renewals_waiting` event a pass says how many and when the
--   budget frees; the renew ticker wakes then (budget_wakeup).
-- - The issuer calls ctx.before_order right before it asks the CA for a new
--   order (ACME newOrder; an order resumed after a restart is not new):
--   budget_reserve takes the budget's storage lock, reads the ledger, checks
--   it, records the order and writes the ledger back, so instances sharing
--   one storage share one budget. An order that finds no room waits in its
--   job when a slot frees within BUDGET_INLINE_WAIT, else its attempt ends
--   with code "order_budget" and a retry_after at the time it frees.
--
-- The ledger (certmaint.order_budget) is stored at
-- certmaint/order_budget/<issuer folder>/<account>.json, pruned to the
-- window at every write (bounded), written whole by storage:store (atomic
-- in every backend). A ledger that does not parse is reported
-- (`order_budget_ledger_corrupt`, error level), kept beside it as .corrupt,
-- and rebuilt from the issue times (not_before) of the certificates this
-- issuer's folder holds in the window. Why rebuild rather than treat the
-- budget as spent for a window: with the per-domain window of a week, "spent"
-- would stop every renewal for seven days, a worse risk than the orders the
-- rebuild cannot see (failed ones, and other accounts'), which at worst meet
-- the CA's own limit, whose rateLimited answer carries a Retry-After the
-- jobs honour.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local keys = require "certmaint.keys"
local rfc3339 = require "certmaint.rfc3339"
local issuers = require "certmaint.issuer"
local ledger_mod = require "certmaint.order_budget"
local public_suffix = require "certmaint.public_suffix"

local M = {}

local PREFIX = "certmaint/order_budget"
-- seconds an order may wait inside its job for a slot that frees that soon
-- (longer waits give the concurrency slot back and come back at the time)
local INLINE_WAIT = 10

local function log(level, event, fields) core.log(level, event, fields or {}) end

-- the defaults when the policy names no order_budget (Let's Encrypt's limits)
local DEFAULTS = {
  enabled = true, renewals_per_domain = false, public_suffix_list = public_suffix.DEBIAN_LIST,
  orders_per_window = ledger_mod.LETS_ENCRYPT.orders_per_window, window = ledger_mod.LETS_ENCRYPT.window,
  per_domain = ledger_mod.LETS_ENCRYPT.per_domain, per_domain_window = ledger_mod.LETS_ENCRYPT.per_domain_window,
}

-- parsed public suffix lists by path (false: unreadable), once a process
local PSL = {}

local function field(obj, k)
  local ok, v = pcall(function() return obj[k] end) -- a strict object may raise on a missing key
  return ok and v or nil
end

local function is_acme(iss) return type(field(iss, "directory")) == "string" end

--- The budget of issuer iss (a member of the issuer list), or nil when none
-- applies: the policy's order_budget (enabled = false: none), or without one
-- Let's Encrypt's limits for an ACME issuer.
function M:budget_of(iss)
  local limits = self.policy.order_budget
  if limits == nil then
    if not is_acme(iss) then return nil end
    limits = DEFAULTS
  elseif not limits.enabled then
    return nil
  end
  self.budgets = self.budgets or setmetatable({}, { __mode = "k" })
  local b = self.budgets[iss]
  if b and b.limits == limits then return b end
  local folder = issuers.storage_key(iss)
  local email = field(iss, "email")
  local account = keys.safe((type(email) == "string" and email ~= "") and email or "default")
  b = {
    limits = limits, folder = folder, describe = issuers.describe(iss),
    key = PREFIX .. "/" .. folder .. "/" .. account .. ".json",
    lock = "order_budget_" .. keys.safe(folder .. "_" .. account),
  }
  self.budgets[iss] = b
  return b
end

local function psl_of(limits)
  local path = limits.public_suffix_list
  if not path then return nil end
  local list = PSL[path]
  if list == nil then
    local err
    list, err = public_suffix.load(path)
    if not list then
      log("warn", "public_suffix_list_unavailable", { path = path, error = err,
        fallback = "a name's last two labels are its registered domain" })
      list = false
    end
    PSL[path] = list
  end
  return list or nil
end

--- The registered domains an order for `names` counts against (sorted,
-- each once): the policy's registered_domain hook, else the public suffix
-- list, else the last two labels.
function M:budget_domains(b, names)
  local limits, psl = b.limits, psl_of(b.limits)
  local seen, out = {}, {}
  for _, n in ipairs(names) do
    local d
    if limits.registered_domain then
      local ok, v = self.hooks:decide("registered_domain", limits.registered_domain, n)
      if ok and type(v) == "string" and v ~= "" then d = v:lower() end
    end
    d = d or public_suffix.registered_domain(n, psl)
    if not seen[d] then
      seen[d] = true
      out[#out + 1] = d
    end
  end
  table.sort(out)
  return out
end

--- Does an order for e count against per_domain? Let's Encrypt does not
-- count a renewal (the same names as a certificate it issued) there; an
-- entry with a certificate and unchanged names renews.
function M:budget_counts_domain(b, e)
  if b.limits.renewals_per_domain then return true end
  return not (e.id and not e.names_changed)
end

--- A ledger rebuilt from the issue times of the certificates in b's folder.
function M:budget_rebuild(b, now)
  local l = ledger_mod.new()
  local cut = now - b.limits.window
  local dcut = now - b.limits.per_domain_window
  for _, primary in ipairs(self.order) do
    local e = self.entries[primary]
    local cert = e and e.id and (e.issuer_key or self.issuer_key) == b.folder and self.cache:get(e.id, { pem = false })
    if cert and cert.not_before > dcut then
      if cert.not_before > cut then l.orders[#l.orders + 1] = cert.not_before end
      for _, d in ipairs(self:budget_domains(b, cert.names)) do
        local list = l.domains[d] or {}
        list[#list + 1] = cert.not_before
        l.domains[d] = list
      end
    end
  end
  table.sort(l.orders)
  for _, list in pairs(l.domains) do table.sort(list) end
  return l
end

--- b's ledger at now, pruned: ledger | nil, err, code (storage failed).
-- A corrupt ledger is rebuilt; when `locked` (the caller holds b's lock)
-- the rebuilt one is written and the bad bytes kept at <key>.corrupt.
function M:budget_load(b, now, locked)
  local raw, err, code = self.storage:load(b.key)
  if raw == nil then
    if code == "ENOENT" then return ledger_mod.new() end
    return nil, err, code
  end
  local l, derr = ledger_mod.decode(raw)
  if l then return ledger_mod.prune(l, b.limits, now) end
  l = self:budget_rebuild(b, now)
  if locked then
    log("error", "order_budget_ledger_corrupt", { key = b.key, issuer = b.describe, error = derr,
      kept = b.key .. ".corrupt", orders = #l.orders,
      action = "rebuilt from the issue times of the certificates stored for this issuer" })
    local ok, serr = self.storage:store(b.key .. ".corrupt", raw)
    if ok then ok, serr = self.storage:store(b.key, ledger_mod.encode(l)) end
    if not ok then log("error", "order_budget_write_failed", { key = b.key, error = serr }) end
  end
  return l
end

--- ctx.before_order for an issuer's request on behalf of e: reserve a
-- slot in iss's budget (or nothing to do when none applies).
function M:budget_before_order(iss, e)
  local b = self:budget_of(iss)
  if not b then return nil end
  return function(names)
    return self:budget_reserve(b, e, names or e.names)
  end
end

--- Reserve one order in budget b for e (names: the order's). Returns true
-- | nil, err, code ("order_budget" with err.retry_after when the budget
-- frees later than INLINE_WAIT; a storage failure's code otherwise).
function M:budget_reserve(b, e, names)
  local domains = self:budget_counts_domain(b, e) and self:budget_domains(b, names) or {}
  -- one reservation at a time in this process: its orders queue here rather
  -- than poll the storage lock against each other (other instances still
  -- meet at the storage lock)
  self.budget_turn = self.budget_turn or loop.cond()
  while true do
    while self.budget_busy do self.budget_turn:wait() end
    self.budget_busy = true
    local took, lock, err, code = pcall(self.take_lock, self, b.lock)
    if not took or not lock then
      self.budget_busy = false
      self.budget_turn:notify_all()
      if not took then error(lock, 0) end
      return nil, err, code
    end
    local ran, res, free, why = pcall(function()
      local now = core.now()
      local l, lerr, lcode = self:budget_load(b, now, true)
      if not l then return nil, lerr, lcode end
      local fits, free_at, what = ledger_mod.check(l, b.limits, now, domains)
      if not fits then return false, free_at, what end
      ledger_mod.record(l, now, domains)
      local ok, serr, scode = self.storage:store(b.key, ledger_mod.encode(l))
      if not ok then return nil, serr, scode end
      log("info", "order_budget_reserved", { name = e.primary, issuer = b.describe, at = string.format("%.3f", now),
        used = (ledger_mod.used(l, b.limits, now)), budget = b.limits.orders_per_window, window = b.limits.window,
        domains = #domains > 0 and table.concat(domains, ",") or nil })
      return true
    end)
    self:release_lock(lock)
    self.budget_busy = false
    self.budget_turn:notify_all()
    if not ran then error(res, 0) end
    if res then return true end
    if res == nil then
      return nil, { message = "order budget ledger " .. b.key .. ": " .. tostring(free) }, why or "storage"
    end
    local now = core.now()
    if free - now > INLINE_WAIT or self.stopping then
      return nil, { message = string.format("order budget of %s used up (%s): the next order may go at %s",
        b.describe, why, rfc3339.iso(free)), retry_after = free }, "order_budget"
    end
    loop.sleep(math.max(free - now, 0.05))
  end
end

--- When the renew ticker should wake for renewals waiting for the budget (nil: none wait).
function M:budget_wakeup() return self.budget_wake end

--- Queue the due candidates ({ e =, reason = "renew"|"obtain", not_after = }),
-- within the budget of the first issuer (the one a renewal asks first).
-- Without a budget every candidate is submitted, as before.
function M:budget_admit(cands, tick, collector)
  local b = self.issuers[1] and self:budget_of(self.issuers[1])
  if not b then
    for _, c in ipairs(cands) do
      if self:submit(c.e, c.reason, collector) then tick.queued = tick.queued + 1 end
    end
    return
  end
  self.budget_wake = nil
  -- the closest to expiry first (no certificate at all: the very first)
  table.sort(cands, function(x, y)
    if x.not_after ~= y.not_after then return x.not_after < y.not_after end
    return x.e.primary < y.e.primary
  end)
  -- a projection of the ledger: what storage says plus what this pass admits
  -- (a storage failure is not decided here: the order's reservation reports it)
  local l = self:budget_load(b, core.now(), false) or ledger_mod.new()
  local waiting, soonest, why = 0, nil, nil
  local account_full = false -- once the account's limit is reached the rest wait for it unchecked
  for _, c in ipairs(cands) do
    if self.stopping then break end
    local st = self.jobs:status("renew:" .. c.e.primary)
    local busy = st and (st.state == "queued" or st.state == "running"
      or (st.state == "waiting" and st.next_attempt > core.now()))
    -- busy: its job is already at it, or backing off; nothing to admit
    if not busy and account_full then
      waiting = waiting + 1
    elseif not busy then
      local domains = self:budget_counts_domain(b, c.e) and self:budget_domains(b, c.e.names) or {}
      local fits, free_at, what = ledger_mod.check(l, b.limits, core.now(), domains)
      if not fits and what == "account" then account_full = true end
      if fits then
        -- spread: no more queued and running at once than the concurrency
        while self.jobs:pending() >= self.jobs.concurrency and not self.stopping do self.job_event:wait() end
        if not self.stopping and self:submit(c.e, c.reason, collector) then
          tick.queued = tick.queued + 1
          ledger_mod.record(l, core.now(), domains)
        end
      else
        waiting = waiting + 1
        if not soonest or free_at < soonest then soonest, why = free_at, what end
      end
    end
  end
  if waiting > 0 then
    local now = core.now()
    tick.waiting = waiting
    -- wake when a batch fits (as many as run at once), not at every slot
    -- freed: fewer passes, fewer events, the same orders per window
    local wake = soonest
    if why == "account" then
      wake = ledger_mod.account_free_at(l, b.limits, now, math.min(waiting, self.jobs.concurrency))
    end
    -- a hair after it: a timer that fires a millisecond early finds nothing free
    self.budget_wake = math.max(wake + 0.05, now + 1)
    log("info", "renewals_waiting", { waiting = waiting, issuer = b.describe, limit = why,
      budget_frees_at = rfc3339.iso(soonest), orders_in_window = (ledger_mod.used(l, b.limits, now)),
      budget = b.limits.orders_per_window, window = b.limits.window })
    self.wake:notify_all()
  end
end

return M
