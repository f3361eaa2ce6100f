--- The OCSP pass (ocsp_check_interval ticks). Staple fetching, verification
-- and revocation handling land here (issue 9); today the pass reports what
-- it would refresh: certificates that name a responder and whose staple is
-- missing or no longer fresh (the C scan cache:staples_due).
local core = require "certmaint.core"

local M = {}

function M:ocsp_pass()
  local now = core.now()
  local due = self.cache:staples_due(now)
  return { kind = "ocsp", at = now, due = #due, refreshed = 0 }
end

return M
