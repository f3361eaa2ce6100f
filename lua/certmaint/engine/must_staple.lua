--- Must-Staple (RFC 7633, the TLS Feature extension listing status_request):
-- a client that sees it refuses the certificate unless the server staples a
-- valid OCSP response, so such a certificate without one is an outage, not
-- a missed optimisation. After each OCSP pass the engine says so at error
-- level (event must_staple_unstapled); status flags these certificates and
-- status --check counts one without a valid staple as needing attention.
local core = require "certmaint.core"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

--- Why a must-staple certificate's staple `ocsp` (a cache entry's, or a
-- status row's) is not valid at now, or nil when it is.
function M.staple_problem(ocsp, now)
  if not ocsp or not ocsp.status then return "no staple" end
  if not ocsp.next_update or ocsp.next_update <= now then
    return "staple expired " .. (ocsp.next_update and rfc3339.iso(ocsp.next_update) or "(no next update)")
  end
  return nil
end

--- Is cache entry id a must-staple certificate? `seen`: a table the caller
-- keeps for one pass or command (the scan below is made once for it).
function M:is_must_staple(id, seen)
  local v = M.must_staple_set(self, seen)[id] or false
  seen[id] = v
  return v
end

local SCANNED = {} -- the key in a `seen` table of the must-staple ids scanned for it

-- The ids of the cached certificates that ask for a staple, scanned once for
-- the operation `seen` belongs to (a pass, a status call): one C scan of the
-- cache's flags (a cache:get each was ~15 us a certificate, 1.5 s of the first
-- OCSP pass at 100k).
function M.must_staple_set(self, seen)
  local set = seen[SCANNED]
  if not set then
    set = {}
    for _, id in ipairs(self.cache:ids { must_staple = true }) do set[id] = true end
    seen[SCANNED] = set
  end
  return set
end

--- One-shot commands (status, status --check) run no OCSP pass: attach the
-- stored staple (certmagic's key, verified as the pass verifies it) to each
-- cached must-staple certificate that has none, so they judge the staple a
-- server would have, not an empty cache. Only must-staple certificates: the
-- others need no verify per status call. Returns how many were attached.
function M:attach_stored_must_staples(now)
  if not (self.verify_staple and self.attach_staple and self.staple_key) then return 0 end
  now = now or core.now()
  local skew = (self.policy.ocsp or {}).skew or 300
  local seen, n = {}, 0
  for id in pairs(self.by_id) do
    if self:is_must_staple(id, seen) then
      local cert = self.cache:get(id)
      local issuer_pem = cert and not cert.ocsp and self.issuer_pem_of(cert.pem)
      local der = issuer_pem and self.storage:load(self.staple_key(cert))
      local info = der and self:verify_staple(der, cert, issuer_pem, now, skew)
      if info and self:attach_staple(id, cert, der, info) then n = n + 1 end
    end
  end
  return n
end

--- After an OCSP pass: every cached must-staple certificate (managed, or
-- from ocsp.staple_files) that is not expired and has no valid staple is an
-- error-level event. tick.must_staple counts the must-staple certificates,
-- tick.must_staple_unstapled those without a valid staple.
function M:must_staple_check(now, tick)
  now = now or core.now()
  tick = tick or {}
  local seen = {}
  local n, bad = 0, 0
  local function check(id)
    if seen[id] ~= nil or not self:is_must_staple(id, seen) then return end
    local c = self.cache:get(id, { pem = false })
    if not c or c.not_after <= now then return end -- expired: the renew pass's business
    n = n + 1
    local why = M.staple_problem(c.ocsp, now)
    if why then
      bad = bad + 1
      core.log("error", "must_staple_unstapled", { name = c.names[1] or "", serial = c.serial, why = why,
        managed = c.managed })
    end
  end
  for id in pairs(M.must_staple_set(self, seen)) do
    if self.by_id[id] or (self.staple_files_by_id and self.staple_files_by_id[id]) then check(id) end
  end
  tick.must_staple = n
  tick.must_staple_unstapled = bad
  return bad, n
end

return M
