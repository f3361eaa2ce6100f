-- an issuer that always fails: renewals fail, the retry state shows in status
local certmaint = require "certmaint"
local down = {}
function down.issue() return nil, "the CA is unreachable (planned)", "connect" end
function down.storage_key() return "down" end
function down.describe() return "an issuer that is down" end
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = down,
  certificates = { "down.test" },
}
