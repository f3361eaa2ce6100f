-- ok_deploy.lua with an issuer that can revoke (the internal CA, plus a revoke
-- that only logs): `certmaint revoke` must deploy the replacement
local certmaint = require "certmaint"
local policy = require "ok_deploy" -- the policy next to this one
local inner = policy.issuer
local revocable = setmetatable({
  revoke = function(_, cert) certmaint.log("info", "test_revoked", { serial = cert.serial }) return true end,
}, { __index = function(_, k)
  local v = inner[k]
  if type(v) == "function" then return function(_, ...) return v(inner, ...) end end
  return v
end })
return certmaint.policy {
  storage = policy.storage, issuer = revocable, certificates = { "deploy.test" },
  on_renewed = policy.on_renewed,
}
