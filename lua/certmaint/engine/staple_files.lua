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
  self.staple_files_path[path], self.staple_files_by_id[id] = nil, nil
  if not self.by_id[id] then self.cache:remove(id) end
end

--- Read ocsp.staple_files into the cache, unmanaged. Returns the number of
-- files loaded and the number that failed (each failure logged at error
-- level with its path).
function M:load_staple_files()
  local listed = (self.policy.ocsp or {}).staple_files or {}
  self.staple_files_by_id = self.staple_files_by_id or {} -- cache id -> path
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
        self.staple_files_path[path], self.staple_files_by_id[id] = id, path
        local names = self.cache:get(id, { pem = false }).names
        log("info", "staple_file_loaded", { path = path, name = names[1] or "",
          managed = self.by_id[id] and true or nil })
      end
      loaded = loaded + 1
    end
  end
  for path in pairs(self.staple_files_path) do
    if not wanted[path] then self:drop_staple_file(path) end
  end
  return loaded, failed
end

--- The staple of staple file entry id changed: write der (a verified DER
-- response) to `<path>.ocsp`, or remove that file when der is nil.
-- Returns true when the file changed, false when it already said that,
-- nil, err when it cannot be written (logged at error level).
function M:write_staple_file(id, der)
  local path = self.staple_files_by_id and self.staple_files_by_id[id]
  if not path then return false end
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

return M
