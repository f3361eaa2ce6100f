-- issuer: certmaint's internal CA (certmaint.issuer.internal) — no ACME CA needed
--
-- Local services and development: certificates for names on this machine,
-- issued by a local CA that certmaint keeps in storage (trust
-- <data>/pki/authorities/local/root.crt in your clients). The demo runs this
-- policy with CERTMAINT_LIFETIME=30s so renewals happen before your eyes.
local certmaint = require "certmaint"

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") or "certmaint-data" },
  issuer = certmaint.issuer.internal { lifetime = os.getenv("CERTMAINT_LIFETIME") or "7d" },

  certificates = {
    "localhost",
    { "app.localhost", "api.app.localhost" },
    "*.dev.localhost",
    "127.0.0.1",
  },

  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
  clean_interval = os.getenv("CERTMAINT_CLEAN_INTERVAL") or "24h",
  -- default renewal window: the last 1/3 of the lifetime (1/2 under 10 days)

  on_renewed = function(cert)
    certmaint.log("info", "local_renewed", { name = cert.names[1], how = cert.event })
  end,
}
