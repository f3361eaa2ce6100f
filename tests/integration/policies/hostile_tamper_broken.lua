-- Tampers with the host, then fails to load: a reload with it must leave the
-- running policy, and the host, as they were.
pcall(function() getmetatable("").__index = {} end)
pcall(function() require("certmaint").log = nil end)
pcall(function() require("certmaint.renewal").renew_at = nil end)
error("this policy does not load")
