-- issuer: internal CA; a file storage whose every call from a loop task waits
-- while the file $CERTMAINT_HANG_FLAG exists: a hung NFS mount or disk, so a
-- pass that needs storage never completes (tests/integration/watchdog.sh).
local certmaint = require "certmaint"
local loop = require "certmaint.loop"
local lfs = require "lfs"

local inner = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") }
local flag = assert(os.getenv("CERTMAINT_HANG_FLAG"), "CERTMAINT_HANG_FLAG must name the hang flag file")

local function hang_while_flagged()
  if not loop.in_task() then return end
  local logged = false
  while lfs.attributes(flag, "mode") do
    if not logged then
      certmaint.log("info", "test_storage_hanging", {})
      logged = true
    end
    loop.sleep(0.2)
  end
end

local hanging = setmetatable({}, { __index = function(_, k)
  local v = inner[k]
  if type(v) ~= "function" then return v end
  return function(_, ...)
    hang_while_flagged()
    return v(inner, ...)
  end
end })

return certmaint.policy {
  storage = hanging,
  issuer = certmaint.issuer.internal { lifetime = os.getenv("CERTMAINT_LIFETIME") or "8s" },
  certificates = { "watch.test" },
  renew_check_interval = "1s",
  ocsp_check_interval = "1s",
  clean_interval = "1s",
  watchdog_intervals = 3,
}
