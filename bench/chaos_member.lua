-- One member of bench/chaos.sh's two-daemon cluster: etcd storage shared by
-- both (CHAOS_ETCD_URL), Pebble over http-01 with the tokens in etcd
-- (distributed), member 1 listening on Pebble's httpPort all the time
-- (standby), member 2 on a port Pebble never asks, so its orders are
-- validated through the shared storage. Each member deploys to its own
-- folder (CHAOS_DEPLOY_DIR/<member>/<name>/fullchain.pem): what that member
-- "serves", sampled every second by the script.
--
-- 60 s certificates: renewal at half-life (renewal_window_ratio 0.5, the
-- default below 10 days spelled out), a 1 s renew pass, a 2 s OCSP pass (a
-- staple is refreshed half-way through its span, clamped to the certificate's
-- notAfter), a 5 s lock lease so a SIGKILLed member's locks free quickly.
local certmaint = require "certmaint"

local env = os.getenv
local member = tonumber(env("MEMBER"))
local http01 = member == 1
  and { listen = "127.0.0.1:" .. env("PEBBLE_HTTP_PORT"), standby = true, distributed = true }
  or { listen = "127.0.0.1:" .. env("CHAOS_SILENT_PORT"), distributed = true }

local names = {}
for n in env("CHAOS_NAMES"):gmatch("%S+") do names[#names + 1] = n end

return certmaint.policy {
  storage = certmaint.storage.etcd {
    endpoints = { env("CHAOS_ETCD_URL") },
    prefix = "/certmaint-chaos",
    lock_ttl = env("CHAOS_LOCK_TTL") or "5s",
  },
  issuer = certmaint.issuer.acme {
    directory = env("PEBBLE_DIR_URL"),
    ca_bundle = env("PEBBLE_CA_BUNDLE"),
    email = "chaos@example.test",
    challenges = { http01 = http01 },
  },
  certificates = names,
  renewal_window_ratio = tonumber(env("CHAOS_RENEW_RATIO") or "0.5"),
  renew_check_interval = "1s",
  ocsp_check_interval = env("CHAOS_OCSP_CHECK") or "2s",
  ocsp = { timeout = "3s" },
  lock_wait = "30s",
  -- 4 names renewed twice a minute are ~480 orders an hour: Let's Encrypt's
  -- default budget (300 per 3 h) would stop renewals after ~37 min (it did,
  -- in the first hour run). The budget stays on, sized for Pebble.
  order_budget = { orders_per_window = 100000, window = "3h", per_domain = 100000, per_domain_window = "168h" },
  clean_interval = "5m",
  on_renewed = certmaint.deploy.files { dir = env("CHAOS_DEPLOY_DIR") .. "/" .. member },
}
