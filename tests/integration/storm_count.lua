-- Orders per window in a renewal storm (tests/integration/acme_storm.sh, bench/storm.sh):
--   lua5.4 storm_count.lua WINDOW_SECONDS PEBBLE_LOG CERTMAINT_LOG...
-- prints "reserved=<n> reserved_max=<m> pebble_orders=<n> pebble_max=<m>":
-- reserved_max, the most order_budget_reserved events (certmaint's ledger,
-- millisecond times) in any window [t, t + WINDOW); pebble_max, the most
-- orders Pebble created ("Added order" lines, whole seconds) in any window
-- certainly shorter than WINDOW (stamps at most WINDOW - 1 s apart).
local window = assert(tonumber(arg[1]), "window seconds")

local function lines(path)
  local f = assert(io.open(path, "rb"))
  local out = {}
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

-- the most of `times` (ascending) within any span for which within(a, b) holds
local function max_in_window(times, within)
  local best, lo = 0, 1
  for hi = 1, #times do
    while not within(times[lo], times[hi]) do lo = lo + 1 end
    best = math.max(best, hi - lo + 1)
  end
  return best
end

local reserved = {}
for i = 3, #arg do
  for _, l in ipairs(lines(arg[i])) do
    local at = l:match("event=order_budget_reserved .*at=([%d.]+)")
    if at then reserved[#reserved + 1] = tonumber(at) end
  end
end
table.sort(reserved)

local pebble = {}
for _, l in ipairs(lines(arg[2])) do
  if l:find("Added order", 1, true) then
    local y, mo, d, h, mi, s = l:match("(%d%d%d%d)/(%d%d)/(%d%d) (%d%d):(%d%d):(%d%d)")
    if y then
      pebble[#pebble + 1] = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = s }
    end
  end
end
table.sort(pebble)

print(string.format("reserved=%d reserved_max=%d pebble_orders=%d pebble_max=%d", #reserved,
  max_in_window(reserved, function(a, b) return b - a < window end), #pebble,
  max_in_window(pebble, function(a, b) return b - a <= window - 1 end)))
