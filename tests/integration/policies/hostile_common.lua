-- Shared by the hostile_*.lua policies (tests/integration/hostile_policies.sh):
-- one 8-second certificate from the internal CA, a 1-second renew check and
-- tight hook limits, plus whatever hooks the hostile policy brings.
local certmaint = require "certmaint"
return function(hooks, limits)
  local spec = {
    storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
    issuer = certmaint.issuer.internal { lifetime = "8s" },
    certificates = { "hostile.test" },
    renew_check_interval = "1s",
    hook_limits = { decision_time = "1s", event_time = "1s", memory = 16 * 1024 * 1024 },
  }
  for k, v in pairs(hooks) do spec[k] = v end
  for k, v in pairs(limits or {}) do spec.hook_limits[k] = v end
  return certmaint.policy(spec)
end
