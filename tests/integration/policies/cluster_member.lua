-- One member of a three-instance cluster (tests/integration/cluster.bash):
-- MEMBER=1 listens for http-01 on Pebble's httpPort and answers every
-- member's validations from storage (standby); members 2 and 3 listen where
-- Pebble never asks (CLUSTER_SILENT_PORTS), so their orders are validated only
-- through the shared storage. CLUSTER_STORAGE: "file" (SHARED_DATA, one
-- directory) or "etcd" (ETCD_URL). CLUSTER_NAMES: the names, one certificate each.
local certmaint = require "certmaint"
local member = tonumber(os.getenv("MEMBER"))
local silent = {}
for p in os.getenv("CLUSTER_SILENT_PORTS"):gmatch("%d+") do silent[#silent + 1] = p end
local http01 = member == 1
  and { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT"), standby = true }
  or { listen = "127.0.0.1:" .. silent[member - 1] }
local storage
if os.getenv("CLUSTER_STORAGE") == "etcd" then
  storage = certmaint.storage.etcd {
    endpoints = { os.getenv("ETCD_URL") },
    prefix = "/certmaint-it",
    lock_ttl = os.getenv("CLUSTER_LOCK_TTL") or "10s",
  }
else
  storage = certmaint.storage.file { root = os.getenv("SHARED_DATA") }
end
local names = {}
for n in os.getenv("CLUSTER_NAMES"):gmatch("%S+") do names[#names + 1] = n end
return certmaint.policy {
  storage = storage,
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { http01 = http01 },
  },
  certificates = names,
  -- member 1 looks less often, so members 2 and 3 (started after it, so their
  -- checks would otherwise always come second) take most renewals' locks: the
  -- kill -9 of a lock holder must not take down the one http-01 listener
  renew_check_interval = member == 1 and "3s" or "1s",
  concurrency = 16,
}
