-- issuer: Pebble (tests/integration/pebble.bash) through a directory that adds
-- renewalInfo (acme_ari.sh's stub, ARI_DIR_URL): Debian's Pebble 2.4 has no ARI
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("ARI_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { http01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT") } },
  },
  certificates = { "ari.example.test" },
  renew_check_interval = "1s",
}
