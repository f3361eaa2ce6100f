-- Garbage arguments to every API a hook can reach, each in a pcall, then one
-- unprotected.
local certmaint = require "certmaint"
local base = require "hostile_common"
local big = ("a"):rep(100000)
local calls = {
  function() return certmaint.exec(42) end,
  function() return certmaint.exec({}) end,
  function() return certmaint.exec({ {} }) end,
  function() return certmaint.exec({ "true" }, 5) end,
  function() return certmaint.exec({ "true" }, { timeout = "soon" }) end,
  function() return certmaint.exec({ "/nonexistent/program" }) end,
  function() return certmaint.exec({ big }) end,
  function() return certmaint.log(nil) end,
  function() return certmaint.log({}, {}, {}) end,
  function() return certmaint.log("info", "garbage", { a = {}, b = print, [1] = 2 }) end,
  function() return certmaint.log("bogus", big, 7) end,
  function() return certmaint.loop.sleep("x") end,
  function() return certmaint.loop.http(42) end,
  function() return certmaint.renewal.needs_renewal(nil, "now") end,
  function() return certmaint.duration.parse({}) end,
  function() return certmaint.policy(7) end,
}
return base {
  on_tick = function(tick)
    for _, f in ipairs(calls) do pcall(f) end
    pcall(tick.manage, nil)
    pcall(tick.manage, { {} })
    pcall(tick.manage, big)
    pcall(tick.unmanage, {})
    certmaint.exec(nil) -- unprotected: the hook fails, the daemon goes on
  end,
  on_renewed = function(cert)
    cert.pem = nil
    cert.names = 5
    return certmaint.log("info", "garbage_renewed", cert)
  end,
}
