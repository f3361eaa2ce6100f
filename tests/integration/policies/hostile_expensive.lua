-- Single expensive library calls: a pathological pattern in needs_renewal,
-- huge string.rep / table.concat / string.format results in on_renewed, and
-- a loop of big string.rep calls (few instructions between them) in
-- allow_name.
local base = require "hostile_common"
-- a long limit for event hooks: on_renewed must run into the memory limit
return base({
  needs_renewal = function()
    return string.find(("a"):rep(3e4), ("a*"):rep(30) .. "b") ~= nil
  end,
  allow_name = function() -- a decision hook: 1 s
    for _ = 1, 1e9 do local _ = ("x"):rep(1e7) end
  end,
  on_tick = function(tick) tick.manage("extra.hostile.test") end,
  on_renewed = function(cert)
    local ok = pcall(string.rep, "x", 2 ^ 40)
    local parts = {}
    for i = 1, 64 do parts[i] = ("y"):rep(1024 * 1024) end
    local all = table.concat(parts) -- 64 MiB: past the 16 MiB the call may add
    return ok, all, string.format("%s%s", all, all), cert
  end,
}, { event_time = "10s" })
