--- Staple-only certificates (policy ocsp.staple_files): PEM files of
-- certificates certmaint does not manage (another tool renews them), kept in
-- the cache unmanaged so the OCSP pass staples them too, as HAProxy's own OCSP
-- update does. Each staple is written beside its file as `<path>.ocsp` (DER,
-- HAProxy's convention), atomically and only when the bytes changed.
--
-- The files are read at start-up and on every policy reload (SIGHUP): a file
-- whose certificate changed replaces its cache entry; one dropped from the
-- list leaves the cache. A file that is missing or not a certificate is an
-- error naming the path, never fatal: the other files are still stapled.
local core = require "certmaint.core"

local M = {}

local MAX_PEM = 1024 * 1024 -- a chain file larger than this is not one

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- The staple file written beside path.
function M.staple_file_path(path) return path .. ".ocsp" end

-- Forget the cache entry of one staple file (unless the policy manages the
-- same certificate: then the entry is the managed one's and stays).
function M:drop_staple_file(path)
  local id = self.staple_files_path[path]
  if not id then return end
  self.staple_files_path[path] = nil
  local paths = self.staple_files_by_id[id]
  paths[path] = nil
  if next(paths) then return end -- another listed file holds the same certificate
  self.staple_files_by_id[id] = nil
  if not self.by_id[id] then self.cache:remove(id) end
end

--- A staple file found beside a newly loaded certificate may be an older
-- certificate's (the file was replaced) or stale: one that does not verify
-- for this certificate now is removed, so a server never staples it with
-- the new one. (The OCSP pass writes a fresh one.)
function M:check_staple_beside(id, path)
  local out = M.staple_file_path(path)
  local der = core.read_file(out, 65536 + 1)
  if not der or not self.verify_staple then return end
  local cert = self.cache:get(id)
  local issuer_pem = self.issuer_pem_of(cert.pem)
  local ok, err
  if issuer_pem then
    ok, err = self:verify_staple(der, cert, issuer_pem, core.now(), (self.policy.ocsp or {}).skew or 300)
  else
    err = "the chain holds no issuer certificate to verify it with"
  end
  if ok then return end
  local removed, rerr = core.remove(out)
  if removed then
    log("info", "staple_file_removed", { path = out, why = "not a valid staple of " .. path .. ": " .. tostring(err) })
  else
    log("error", "staple_file_write_failed", { path = out, error = rerr })
  end
end

--- Read ocsp.staple_files into the cache, unmanaged. Returns the number of
-- files loaded and the number that failed (each failure logged at error
-- level with its path).
function M:load_staple_files()
  local listed = (self.policy.ocsp or {}).staple_files or {}
  self.staple_files_by_id = self.staple_files_by_id or {} -- cache id -> set of paths
  self.staple_files_path = self.staple_files_path or {}   -- path -> cache id
  local wanted, loaded, failed = {}, 0, 0
  for _, path in ipairs(listed) do
    wanted[path] = true
    local pem, err, code = core.read_file(path, MAX_PEM)
    local id
    -- no options: a new entry is unmanaged, and a certificate the policy
    -- manages as well keeps its managed entry as it is
    if pem then
      id, err, code = self.cache:add(pem)
      if id then err = nil end -- (the second value is `existed`)
    end
    if not id then
      failed = failed + 1
      log("error", "staple_file_failed", { path = path, error = err, code = code })
      self:drop_staple_file(path) -- what it held before is no longer what the file says
    else
      if self.staple_files_path[path] ~= id then
        self:drop_staple_file(path)
        self.staple_files_path[path] = id
        self.staple_files_by_id[id] = self.staple_files_by_id[id] or {}
        self.staple_files_by_id[id][path] = true
        local names = self.cache:get(id, { pem = false }).names
        log("info", "staple_file_loaded", { path = path, name = names[1] or "",
          managed = self.by_id[id] and true or nil })
        self:check_staple_beside(id, path)
      end
      loaded = loaded + 1
    end
  end
  for path in pairs(self.staple_files_path) do
    if not wanted[path] then self:drop_staple_file(path) end
  end
  return loaded, failed
end

-- Make <path>.ocsp say der (nil: no file). Returns changed | nil, err.
local function put_staple_file(path, der)
  local out = M.staple_file_path(path)
  local old = core.read_file(out, 65536 + 1)
  local ok, err, code
  if der then
    if old == der then return false end
    ok, err, code = core.write_atomic(out, der, "0644")
  else
    ok, err, code = core.remove(out)
    if not ok and code == "ENOENT" then return false end
  end
  if not ok then
    log("error", "staple_file_write_failed", { path = out, error = err, code = code })
    return nil, err
  end
  log("info", der and "staple_file_written" or "staple_file_removed", { path = out, bytes = der and #der or nil })
  return true
end

--- The staple of staple file entry id changed: write der (a verified DER
-- response) to `<path>.ocsp` beside each file holding that certificate, or
-- remove those files when der is nil. Returns true when a file changed,
-- false when they already said that, nil, err when one cannot be written
-- (logged at error level; the others are still written).
function M:write_staple_file(id, der)
  local paths = self.staple_files_by_id and self.staple_files_by_id[id]
  if not paths then return false end
  local list = {}
  for path in pairs(paths) do list[#list + 1] = path end
  table.sort(list) -- (the log reads the same each run)
  local changed, failure = false, nil
  for _, path in ipairs(list) do
    local res, err = put_staple_file(path, der)
    if res == nil then failure = err elseif res then changed = true end
  end
  if failure then return nil, failure end
  return changed
end

return M
