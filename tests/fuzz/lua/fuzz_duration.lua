--- fuzz_duration: durations and times in text, wherever they come from a
-- policy, a CA or storage. The first byte picks the reader:
--   0 duration.parse of a string ("1h30m"), then format and parse back
--   1 duration.parse of the text as a number (tonumber)
--   2 rfc3339.parse (stored times, ACME expires, ARI windows), format and back
--   3 acme.client.parse_retry_after (delay-seconds or an IMF-fixdate)
--   4 acme.client.parse_links (Link headers: alternate chains, up)
local duration = require "certmaint.duration"
local rfc3339 = require "certmaint.rfc3339"
local client = require "certmaint.acme.client"

local NOW = 1700000000

local function broken(msg) error("fuzz: " .. msg .. " (property broken)", 0) end

local kinds = {
  [0] = function(s)
    local v, err, code = duration.parse(s, "fuzz")
    if not v then
      if code ~= "invalid" or type(err) ~= "string" or err:sub(1, 6) ~= "fuzz: " then broken("duration failure") end
      return
    end
    if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then broken("duration " .. tostring(v)) end
    local back = duration.parse(duration.format(v))
    if not back or math.abs(back - v) > 0.0005 + v * 1e-12 then
      broken("duration.format(" .. tostring(v) .. ") = " .. duration.format(v) .. " parses to " .. tostring(back))
    end
  end,
  [1] = function(s)
    local n = tonumber(s)
    local v, err, code = duration.parse(n ~= nil and n or s)
    if not v and code ~= "invalid" then broken("duration failure code") end
    if v then duration.format(v) end
  end,
  [2] = function(s)
    local t = rfc3339.parse(s)
    if t == nil then return end
    if type(t) ~= "number" or t ~= t then broken("rfc3339 time " .. tostring(t)) end
    -- format writes what certmaint stores (times since 1970); outside
    -- 1970..9999 (a year 0000 or a leap second on 9999-12-31) it need not
    -- round-trip, as RFC 3339 has four-digit years only
    if t < 0 or t >= 253402300800 then return end
    local text = rfc3339.format(t)
    local back = rfc3339.parse(text)
    if not back or math.abs(back - t) > 1e-6 then broken("rfc3339 " .. text .. " does not parse back") end
    rfc3339.iso(t)
  end,
  [3] = function(s)
    local t = client.parse_retry_after(s, NOW)
    if t ~= nil and (type(t) ~= "number" or t ~= t) then broken("retry-after " .. tostring(t)) end
  end,
  [4] = function(s)
    for rel, list in pairs(client.parse_links(s)) do
      if type(rel) ~= "string" or type(list) ~= "table" or #list == 0 then broken("links") end
    end
  end,
}

return function(data)
  if #data == 0 then return end
  kinds[data:byte(1) % 5](data:sub(2))
end
