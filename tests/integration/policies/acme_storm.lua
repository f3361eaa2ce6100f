-- issuer: Pebble (tests/integration/pebble.bash) over http-01 on certmaint's own
-- listener; a renewal storm: CERTMAINT_STORM_N certificates (default 60) due at
-- once, under an order budget of CERTMAINT_STORM_BUDGET orders (default 20) per
-- CERTMAINT_STORM_WINDOW (default "60s") — tests/integration/acme_storm.sh,
-- bench/storm.sh
local certmaint = require "certmaint"
local n = tonumber(os.getenv("CERTMAINT_STORM_N") or "60")
-- CERTMAINT_STORM_DOMAINS registered domains (storm01.test, ...), the names spread over them
local domains = tonumber(os.getenv("CERTMAINT_STORM_DOMAINS") or "1")
local certs = {}
for i = 1, n do certs[i] = string.format("s%04d.storm%02d.test", i, (i - 1) % domains + 1) end
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@storm.test",
    challenges = { http01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT") } },
  },
  certificates = certs,
  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
  ocsp = { enabled = false },
  concurrency = tonumber(os.getenv("CERTMAINT_STORM_CONCURRENCY") or "8"),
  order_budget = {
    orders_per_window = tonumber(os.getenv("CERTMAINT_STORM_BUDGET") or "20"),
    window = os.getenv("CERTMAINT_STORM_WINDOW") or "60s",
    per_domain = tonumber(os.getenv("CERTMAINT_STORM_PER_DOMAIN") or "100000"),
    per_domain_window = os.getenv("CERTMAINT_STORM_PER_DOMAIN_WINDOW") or "168h",
  },
}
