-- issuer: certmaint's internal CA (certmaint.issuer.internal) with 6-day certificates
--
-- Short-lived certificates (days): renew at half-life, minus a jitter of up to
-- 10% of the lifetime derived from the serial, so a fleet that got its
-- certificates at the same moment does not come back to the CA at the same
-- moment. The decision is a pure function of (cert, now).
local certmaint = require "certmaint"

local JITTER = 0.10 -- at most this fraction of the lifetime earlier than half-life

--- A stable number in [0, 1) from the certificate's serial (FNV-1a): CA
-- serials are random, so a fleet's renewals spread over the jitter span.
local function spread(serial)
  local h = 2166136261
  for i = 1, #serial do h = ((h ~ serial:byte(i)) * 16777619) & 0xffffffff end
  return h / 4294967296.0
end

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") or "/var/lib/certmaint" },
  issuer = certmaint.issuer.internal { lifetime = "6d" },
  certificates = { "edge1.example.com", "edge2.example.com", "edge3.example.com" },
  renew_check_interval = "5m",

  needs_renewal = function(cert, now)
    local lifetime = cert.not_after - cert.not_before
    local at = cert.not_before + lifetime * (0.5 - JITTER * spread(cert.serial))
    return now >= at
  end,
}
