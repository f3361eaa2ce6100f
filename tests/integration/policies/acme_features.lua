-- issuer: Pebble with EAB required and an alternate root (acme_features.sh):
-- eab and preferred_chain from the environment
local certmaint = require "certmaint"
local eab
if os.getenv("EAB_KID") then eab = { kid = os.getenv("EAB_KID"), hmac_key = os.getenv("EAB_HMAC") } end
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = os.getenv("ACME_EMAIL") or "eab@example.test",
    eab = eab,
    preferred_chain = os.getenv("PREFERRED_CHAIN"),
    challenges = { http01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT") } },
  },
  certificates = { "alt.example.test" },
}
