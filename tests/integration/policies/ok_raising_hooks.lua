-- every event hook raises on every call: the daemon must survive and say so
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.internal { lifetime = os.getenv("CERTMAINT_LIFETIME") or "8s" },
  certificates = { "raise.test" },
  renew_check_interval = "1s",
  on_tick = function() error("on_tick raises on purpose") end,
  on_renewed = function() error("on_renewed raises on purpose") end,
  on_error = function() error("on_error raises on purpose") end,
}
