--- certmaint.duration: durations in policy files.
--
-- A duration is either a non-negative number of seconds or a string of one or
-- more <number><unit> parts with units d, h, m, s written largest first, each at
-- most once: "90s", "10m", "1h30m", "7d", "1.5h". Anything else is refused:
-- "" and "10" (a bare number belongs in a number, not a string), "-5m", "5x",
-- "1.5.2h", "5ms", "1m1m", "10 m" (no spaces). Refusing rather than guessing is
-- the point: a typo in a renew interval must not silently become 10 seconds.
--
--   duration.parse("1h30m")            --> 5400
--   duration.parse("10 minutes", "renew_check_interval")
--     --> nil, 'renew_check_interval: bad duration "10 minutes" (use seconds or "90s", "10m", "1h", "7d")', "invalid"
--   duration.format(5400)              --> "1h30m"
local M = {}

M.SECOND = 1
M.MINUTE = 60
M.HOUR = 3600
M.DAY = 86400

-- Units in the only order they may appear in a string.
local UNITS = {
  { "d", 86400 },
  { "h", 3600 },
  { "m", 60 },
  { "s", 1 },
}
local UNIT_RANK, UNIT_SECONDS = {}, {}
for i, u in ipairs(UNITS) do
  UNIT_RANK[u[1]] = i
  UNIT_SECONDS[u[1]] = u[2]
end

M.HINT = '(use seconds or "90s", "10m", "1h", "7d")'

-- Longest duration a string may say: 2^53 s (285 million years), past which a
-- number has no millisecond left and format's text no longer parses back.
M.MAX_SECONDS = 2 ^ 53

-- Longest string we look at: a real duration is a handful of characters, and
-- the value is quoted back in the error message.
local MAX_LEN = 64

local function quote(s)
  if #s > MAX_LEN then s = s:sub(1, MAX_LEN) .. "..." end
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

local function fail(field_name, msg)
  if field_name then msg = field_name .. ": " .. msg end
  return nil, msg, "invalid"
end

local function parse_string(s)
  if #s == 0 or #s > MAX_LEN then return nil end
  local total, pos, last_rank = 0, 1, 0
  while pos <= #s do
    -- digits, optionally one fraction; the unit must follow directly
    local num, unit, nxt = s:match("^(%d+%.?%d*)([dhms])()", pos)
    if not num or num:sub(-1) == "." then return nil end
    local rank = UNIT_RANK[unit]
    if rank <= last_rank then return nil end -- "1m1m", "30m1h"
    last_rank = rank
    -- in floats: "99999999999999999d" in integers wraps around to a negative total
    total = total + (tonumber(num) + 0.0) * UNIT_SECONDS[unit]
    pos = nxt
  end
  if total ~= total or total >= M.MAX_SECONDS then return nil end
  return total
end

--- Parse a duration.
-- @param v a number of seconds (>= 0) or a string such as "10m", "1h30m"
-- @param field_name optional name put in front of the error message
-- @return seconds (a number; an integer when the input is whole) or nil, message, "invalid"
function M.parse(v, field_name)
  local tv = type(v)
  if tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return fail(field_name, "bad duration " .. tostring(v) .. " (must be a finite number of seconds)")
    end
    if v < 0 then
      return fail(field_name, "bad duration " .. tostring(v) .. " (must not be negative)")
    end
    return v
  elseif tv == "string" then
    local secs = parse_string(v)
    if not secs then
      return fail(field_name, "bad duration " .. quote(v) .. " " .. M.HINT)
    end
    return math.tointeger(secs) or secs
  end
  return fail(field_name, "bad duration: expected seconds or a string like \"10m\", got " .. tv)
end

-- Seconds with up to millisecond precision, no trailing zeros: 1.5 -> "1.5".
local function format_seconds(s)
  local str = string.format("%.3f", s):gsub("0+$", ""):gsub("%.$", "")
  return str
end

--- Format seconds for logs and status: 5400 -> "1h30m", 90 -> "1m30s", 0 -> "0s".
-- The result parses back to the same value (to the millisecond).
function M.format(seconds)
  if type(seconds) ~= "number" then
    error("duration.format: expected a number, got " .. type(seconds), 2)
  end
  if seconds ~= seconds then return "NaN" end
  if seconds == math.huge then return "inf" end
  if seconds < 0 then return "-" .. M.format(-seconds) end
  -- round to milliseconds first so 59.9996 becomes "1m", not "60s"
  local ms = math.floor(seconds * 1000 + 0.5)
  local whole, frac = ms // 1000, ms % 1000
  local parts = {}
  for _, u in ipairs(UNITS) do
    local name, size = u[1], u[2]
    if name == "s" then
      if whole > 0 or frac > 0 then
        parts[#parts + 1] = format_seconds(whole + frac / 1000) .. "s"
      end
    else
      local n = whole // size
      if n > 0 then
        -- %.0f, not %d: a duration past 2^63 ms ("9...9d", which parse takes)
        -- is a float without an integer representation
        parts[#parts + 1] = string.format("%.0f%s", n, name)
        whole = whole - n * size
      end
    end
  end
  if #parts == 0 then return "0s" end
  return table.concat(parts)
end

return M
