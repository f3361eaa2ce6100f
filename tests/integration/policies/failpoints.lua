-- tests/integration/failpoints.sh: one certificate ($FP_NAME) from Pebble over
-- dns-01 (or the internal CA: $FP_ISSUER=internal), in the file storage
-- ($CERTMAINT_DATA) or etcd ($FP_STORAGE=etcd: $ETCD_URL under $FP_PREFIX),
-- deployed nginx-style to $FP_DEPLOY; short lock staleness (file: 1 s,
-- etcd: 3 s) so a lock heartbeat runs within one order.
local certmaint = require "certmaint"
local storage
if os.getenv("FP_STORAGE") == "etcd" then
  storage = certmaint.storage.etcd { endpoints = { os.getenv("ETCD_URL") }, prefix = os.getenv("FP_PREFIX"),
    lock_ttl = "3s" }
else
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA"), stale_after = "1s" }
end
local issuer
if os.getenv("FP_ISSUER") == "internal" then
  issuer = certmaint.issuer.internal { lifetime = "7d" }
else
  -- dns-01 through pebble-challtestsrv: cases run side by side, and no
  -- listener (the http-01 port) is shared between them
  local mgmt = os.getenv("CHALLTEST_MGMT")
  local function txt(path, body)
    local r, err = certmaint.loop.http { url = mgmt .. path, method = "POST", timeout = 10, body = body }
    if not r then return nil, err end
    if r.status ~= 200 then return nil, path .. " answered " .. r.status end
    return true
  end
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { dns01 = {
      present = function(name, value) return txt("/set-txt", string.format('{"host":"%s.","value":"%s"}', name, value)) end,
      cleanup = function(name) return txt("/clear-txt", string.format('{"host":"%s."}', name)) end,
    } },
  }
end
return certmaint.policy {
  storage = storage,
  issuer = issuer,
  certificates = { os.getenv("FP_NAME") },
  on_renewed = certmaint.deploy.files { dir = os.getenv("FP_DEPLOY") },
}
