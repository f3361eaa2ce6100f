-- Two instances on one storage (distributed solving): ROLE=answer is a daemon
-- whose http-01 listener stands by on Pebble's httpPort and answers from
-- storage; ROLE=order obtains dist.example.test listening on a port Pebble
-- never asks (its first spare port), so only the other instance can answer.
-- CERTS: one name to order instead of the two certificates.
local certmaint = require "certmaint"
local role = os.getenv("ROLE")
local spare = os.getenv("PEBBLE_SPARE_PORTS"):match("^(%d+)")
local http01 = role == "answer"
  and { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT"), standby = true }
  or { listen = "127.0.0.1:" .. spare }
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("SHARED_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { http01 = http01 },
  },
  certificates = role == "answer" and {}
    or os.getenv("CERTS") and { os.getenv("CERTS") }
    or { "dist.example.test", { "dist2.example.test", "www.dist2.example.test" } },
}
