-- issuer: Pebble (tests/integration/pebble.bash) over http-01 on certmaint's own
-- listener; three certificates deployed as files; the metrics endpoint on
-- METRICS_LISTEN and the textfile at METRICS_TEXTFILE (tests/integration/metrics.sh)
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { http01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT") } },
  },
  certificates = { "a.example.test", { "b.example.test", "www.b.example.test" }, "c.example.test" },
  renew_check_interval = "2s",
  on_renewed = certmaint.deploy.files { dir = os.getenv("METRICS_DEPLOY") },
  metrics = { listen = os.getenv("METRICS_LISTEN"), textfile = os.getenv("METRICS_TEXTFILE") },
}
