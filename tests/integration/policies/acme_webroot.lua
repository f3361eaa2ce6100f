-- issuer: Pebble over http-01 answered by another web server (the test's
-- webroot_server.lua on Pebble's httpPort) from files certmaint's webroot
-- solver writes; two certificates, one with two names
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { webroot = os.getenv("WEBROOT") },
  },
  certificates = { "web.example.test", { "w1.example.test", "w2.example.test" } },
  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
}
