-- an issuer that takes 3 seconds per certificate: SIGTERM must let it finish
local certmaint = require "certmaint"
local loop = require "certmaint.loop"
local internal = certmaint.issuer.internal { lifetime = "1h" }
local slow = {}
function slow.issue(_, req, ctx)
  certmaint.log("info", "slow_issue_started", { name = req.names[1] })
  loop.sleep(3)
  return internal:issue(req, ctx)
end
function slow.storage_key() return internal:storage_key() end
function slow.describe() return "a slow internal CA" end
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA"),
    stale_after = os.getenv("CERTMAINT_STALE_AFTER") or "10s" },
  issuer = slow,
  certificates = { "slow.test" },
}
