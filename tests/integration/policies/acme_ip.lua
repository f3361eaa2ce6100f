-- issuer: Pebble over http-01 for an IP-address identifier (RFC 8738): Pebble
-- validates http://127.0.0.1:<httpPort>/.well-known/acme-challenge/<token>
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ip@example.test",
    challenges = { http01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT") } },
  },
  certificates = { "127.0.0.1" },
}
