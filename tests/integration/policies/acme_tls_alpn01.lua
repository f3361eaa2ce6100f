-- issuer: Pebble (tests/integration/pebble.bash) over tls-alpn-01 on certmaint's own
-- TLS responder (PEBBLE_TLS_PORT); two certificates, one multi-SAN
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { tls_alpn01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_TLS_PORT"), timeout = "5s" } },
  },
  certificates = { "t.example.test", { "u.example.test", "www.u.example.test" } },
}
