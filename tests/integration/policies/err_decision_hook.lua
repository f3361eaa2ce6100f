-- a needs_renewal that raises: `status --check` must not call this well
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.internal { lifetime = "1h" },
  certificates = { "example.test", { "www.example.test", "api.example.test" } },
  needs_renewal = function() error("needs_renewal raises on purpose") end,
}
