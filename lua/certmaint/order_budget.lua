--- certmaint.order_budget: the ledger of new orders placed at one CA account,
-- and the sliding-window limits checked against it (pure: `now` is passed in).
--
-- A ledger is { orders = { t1, t2, ... }, domains = { ["example.com"] = { t, ... } } }:
-- the times (Unix seconds) of the orders placed in the last window, per
-- account and per registered domain, ascending. Limits:
--
--   { orders_per_window = 300, window = 10800,          -- Let's Encrypt: new orders per account per 3 h
--     per_domain = 50, per_domain_window = 604800 }     -- certificates per registered domain per week
--
-- A sliding window: an order at t counts until t + window (at t + window it
-- no longer does). Pruning drops what no window counts, so a ledger holds at
-- most orders_per_window + per_domain × domains times when only this module
-- writes it (a bounded size whatever the number of certificates).
local core = require "certmaint.core"

local M = {}

M.VERSION = 1
--- Let's Encrypt's published limits (letsencrypt.org/docs/rate-limits).
M.LETS_ENCRYPT = { orders_per_window = 300, window = 3 * 3600, per_domain = 50, per_domain_window = 7 * 86400 }
-- a ledger this large was not written by this module (or by a policy whose
-- limits allow it): refuse to parse it rather than hold it
M.MAX_LEDGER_BYTES = 8 * 1024 * 1024

function M.new() return { orders = {}, domains = {} } end

local function in_window(list, window, now)
  local out, cut = {}, now - window
  for _, t in ipairs(list) do
    if t > cut then out[#out + 1] = t end
  end
  return out
end

--- Drop the times no window counts any more (and empty domains).
function M.prune(ledger, limits, now)
  ledger.orders = in_window(ledger.orders, limits.window, now)
  for d, list in pairs(ledger.domains) do
    local kept = in_window(list, limits.per_domain_window, now)
    ledger.domains[d] = (#kept > 0) and kept or nil
  end
  return ledger
end

-- How many of `list` count at now, and when the count drops below `limit`
-- (now when it already is). list ascending.
local function count_and_free(list, limit, window, now)
  local cut, first = now - window, nil
  for i, t in ipairs(list) do
    if t > cut then first = i break end
  end
  local used = first and (#list - first + 1) or 0
  if used < limit then return used, now end
  -- the (used - limit + 1)-th counted order leaving frees one slot
  return used, list[first + used - limit] + window
end

--- Orders counted for the account at now, and the limit.
function M.used(ledger, limits, now)
  return (count_and_free(ledger.orders, limits.orders_per_window, limits.window, now)), limits.orders_per_window
end

--- When n more orders fit under the account limit (now when they already do).
function M.account_free_at(ledger, limits, now, n)
  local limit, window = limits.orders_per_window, limits.window
  local list, cut, first = ledger.orders, now - window, nil
  for i, t in ipairs(list) do
    if t > cut then first = i break end
  end
  local used = first and (#list - first + 1) or 0
  n = math.min(n, limit)
  if used + n <= limit then return now end
  return list[first + used + n - limit - 1] + window
end

--- May an order counted against `domains` (a list of registered domains;
-- empty: the account limit only) be placed at now? Returns true | false,
-- free_at (the earliest time it may), why ("account" | "domain <d>").
function M.check(ledger, limits, now, domains)
  local _, free = count_and_free(ledger.orders, limits.orders_per_window, limits.window, now)
  local why = "account"
  for _, d in ipairs(domains or {}) do
    local _, f = count_and_free(ledger.domains[d] or {}, limits.per_domain, limits.per_domain_window, now)
    if f > free then free, why = f, "domain " .. d end
  end
  if free <= now then return true end
  return false, free, why
end

--- Record an order placed at now, counted against `domains`.
function M.record(ledger, now, domains)
  ledger.orders[#ledger.orders + 1] = now
  for _, d in ipairs(domains or {}) do
    local list = ledger.domains[d] or {}
    list[#list + 1] = now
    ledger.domains[d] = list
  end
  return ledger
end

local function finite(t) return math.type(t) ~= nil and t == t and t > -math.huge and t < math.huge end

-- a list of finite times, sorted on the way in (a clock step back may have
-- written one out of order)
local function times(v, what)
  if type(v) ~= "table" then return nil, what .. " is not a list" end
  local out = {}
  for k, t in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then return nil, what .. " is not a list" end
    if not finite(t) then return nil, what .. "[" .. k .. "] is not a time" end
    out[k] = t
  end
  table.sort(out)
  return out
end

--- Parse a stored ledger. Returns ledger | nil, err (what is wrong, where).
function M.decode(raw)
  if type(raw) ~= "string" then return nil, "not a string" end
  if #raw > M.MAX_LEDGER_BYTES then return nil, "larger than " .. M.MAX_LEDGER_BYTES .. " bytes" end
  local v, err = core.json_decode(raw)
  if type(v) ~= "table" then return nil, "not a JSON object: " .. tostring(err or type(v)) end
  if v.version ~= M.VERSION then return nil, "version " .. tostring(v.version) .. ", not " .. M.VERSION end
  local orders, oerr = times(v.orders or {}, "orders")
  if not orders then return nil, oerr end
  local domains = {}
  if v.domains ~= nil then
    if type(v.domains) ~= "table" then return nil, "domains is not an object" end
    for d, list in pairs(v.domains) do
      if type(d) ~= "string" or d == "" then return nil, "domains has a key that is not a domain" end
      local l, derr = times(list, "domains." .. d)
      if not l then return nil, derr end
      if #l > 0 then domains[d] = l end
    end
  end
  return { orders = orders, domains = domains }
end

--- The stored form (JSON; an empty list stays a list).
function M.encode(ledger, extra)
  local domains = {}
  for d, list in pairs(ledger.domains) do domains[d] = setmetatable(list, core.json_array_mt) end
  local out = { version = M.VERSION, orders = setmetatable(ledger.orders, core.json_array_mt), domains = domains }
  for k, val in pairs(extra or {}) do out[k] = val end
  return (assert(core.json_encode(out)))
end

return M
