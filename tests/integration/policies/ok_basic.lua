-- issuer: internal CA; two certificates, 1-hour lifetime
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.internal { lifetime = os.getenv("CERTMAINT_LIFETIME") or "1h" },
  certificates = { "example.test", { "www.example.test", "api.example.test" } },
  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
  clean = { expired_cert_grace_period = "1s" },
}
