--- certmaint.rfc3339: RFC 3339 times, the one place they are made and read.
--
--   rfc3339.format(1700000000.25)  -> "2023-11-14T22:13:20.25Z"   (Go's RFC3339Nano)
--   rfc3339.iso(1700000000.25)     -> "2023-11-14T22:13:20Z"      (whole seconds)
--   rfc3339.parse("2024-03-01T12:59:55.1+01:00") -> Unix seconds | nil
--   rfc3339.days_from_civil(1970, 1, 1) -> 0
--
-- All times are Unix seconds (numbers) in UTC; pure functions, no clock.
local core = require "certmaint.core"

local M = {}

--- Days since 1970-01-01 of the proleptic Gregorian date y-m-d (Howard
-- Hinnant's algorithm: exact for every year, negative before 1970).
function M.days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- Unix seconds -> "2024-05-01T10:00:00.123456789Z" (UTC, up to nanoseconds,
-- trailing zeros dropped: Go's time.RFC3339Nano, what certmagic writes).
function M.format(t)
  local sec = math.floor(t)
  local ns = math.floor((t - sec) * 1e9 + 0.5)
  if ns >= 1000000000 then sec, ns = sec + 1, 0 end
  local frac = ""
  if ns > 0 then frac = ("." .. string.format("%09d", ns)):gsub("0+$", "") end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. frac .. "Z"
end

--- Unix seconds -> "2026-01-01T00:00:00Z": whole seconds (rounded down), for
-- logs, status output and messages. In C (core/rfc3339.c), which
-- cache:status_json uses too: one implementation.
M.iso = core.rfc3339_iso

--- RFC 3339 text -> Unix seconds (a number; fractions kept), or nil if it is
-- not one.  Accepts "Z"/"z" or a "+hh:mm"/"-hh:mm" offset and "T"/"t".
function M.parse(s)
  if type(s) ~= "string" or #s > 64 then return nil end
  local y, mo, d, h, mi, se, frac, zone =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  if frac ~= "" and not frac:match("^%.%d+$") then return nil end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi),
    tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  local offset
  if zone == "Z" or zone == "z" then
    offset = 0
  else
    local sign, oh, om = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == "-" then offset = -offset end
  end
  local t = M.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset
  if frac ~= "" then t = t + tonumber("0" .. frac) end
  return t
end

return M
