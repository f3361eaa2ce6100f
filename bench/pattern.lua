-- bench/pattern.lua: the bounded pattern functions (core/lua/lpattern.c) against the
-- stock string library, on patterns a policy writes. Prints ns per call for each.
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua/?.so;;" \
--     lua5.4 bench/pattern.lua [N]        # N calls per figure, default 1000000
local N = tonumber(arg[1]) or 1000000
local core = require "certmaint.core"

local CASES = {
  { "match_suffix", "match", "host123.example.com", "^(.-)%.example%.com$" },
  { "find_label", "find", "host123.example.com", "%.(%w+)%." },
  { "gsub_dots", "gsub", "host123.example.com", "%.", "_" },
}
local STOCK = { match = string.match, find = string.find, gsub = string.gsub }
local OURS = { match = core.pattern_match, find = core.pattern_find, gsub = core.pattern_gsub }

local function time(f, a, b, c)
  local t0 = os.clock()
  for _ = 1, N do f(a, b, c) end
  return (os.clock() - t0) * 1e9 / N
end

for _, case in ipairs(CASES) do
  local name, fn = case[1], case[2]
  local stock = time(STOCK[fn], case[3], case[4], case[5])
  local ours = time(OURS[fn], case[3], case[4], case[5])
  print(string.format("%s_stock_ns=%.0f ns  %s_ours_ns=%.0f ns  ratio=%.2f", name, stock, name, ours, ours / stock))
end
