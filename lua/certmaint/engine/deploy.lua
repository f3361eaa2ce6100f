--- Deploy as tracked state: what the policy's on_renewed deployed, where.
--
-- A target is the policy's on_renewed: a certmaint.deploy.files target (its
-- id, "files:<dir>" or "haproxy:<dir>", and files the engine can check) or
-- any other function (id "on_renewed"). Per certificate one small JSON record
-- in storage, keys.deploy(primary) = "certmaint/deploy/<name>.json", written
-- with storage:store (atomic):
--
--   { name = "example.com", targets = { ["files:/etc/nginx/certs"] = {
--       serial = "5f…", deployed_at = 1764640000, host = "web1",  -- last success
--       files = { ["/etc/nginx/certs/example.com/fullchain.pem"] = "<fnv1a32>", … },
--       error = "deploy: …", failed_serial = "61…", failed_at = …,  -- last failure
--       attempts = 2, next_attempt = 1764640120 } } }
--
-- Deploying is a named job "deploy:<primary>" on the engine's queue, so a
-- failed deploy is retried on the same back-off as a failed renewal: the job
-- waits as a next_attempt number in the queue (retry = "manual", no coroutine,
-- no timer), the renew ticker wakes at jobs:next_wakeup() and retry_deploys
-- re-submits what is due. A pass's collector waits for a deploy's first
-- attempt, so `once` and specs see its outcome (tick.deployed,
-- tick.deploy_failed). At start-up, redeploy_changed submits every
-- certificate whose deployed serial is not the stored one, whose last deploy
-- failed, or whose deployed files are missing or changed.
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local deploy = require "certmaint.deploy"

local M = {}

local JOB_PREFIX = "deploy:"
local BATCH = 2048 -- records read at once at start-up
local AGAIN_MAX = 3 -- a newer certificate arriving while deploying is deployed in the same attempt

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- The clean pass's part for the deploy folders (this host's, so before and
-- whatever the clean lock says): temp files of unfinished writes older than
-- one renew tick (deploy.lua's Target:clean_temp).
function M:clean_deploy_temp(now, tick)
  for _, t in ipairs(self:deploy_targets()) do
    if t.files then
      local removed, err = t.files:clean_temp(now - (self.policy.renew_check_interval or 600))
      if not removed then
        core.log("error", "clean_delete_failed", { what = "deploy temp files", target = t.id, error = err })
      else
        for _, p in ipairs(removed) do
          core.log("info", "clean_deleted", { path = p, what = "unfinished deploy write's temp file" })
        end
        tick.temp_deleted = (tick.temp_deleted or 0) + #removed
      end
    end
  end
end

--- The deploy targets of the current policy: a list of { id =, fn = [, files = target] }.
function M:deploy_targets()
  local policy = self.policy
  if self.targets_policy ~= policy then
    local fn = policy.on_renewed
    local files = fn and deploy.target_of(fn)
    if not fn then self.targets = {}
    elseif files then self.targets = { { id = files.id, fn = fn, files = files } }
    else self.targets = { { id = "on_renewed", fn = fn } } end
    self.targets_policy = policy
  end
  return self.targets
end

-- A record's JSON as stored, or nil (logged) when it is not one.
local function decode_record(key, raw, primary)
  local rec = core.json_decode(raw)
  if type(rec) == "table" and type(rec.targets) == "table" then
    rec.name = primary
    return rec
  end
  log("warn", "deploy_record_unreadable", { key = key, action = "deployed again" })
  return nil
end

--- The deploy record of primary, for a deploy attempt: kept in memory only
-- while its deploy job is active (self.deploy_records), else read from
-- storage; a new one when there is none.
function M:deploy_record(primary)
  local rec = self.deploy_records[primary]
  if rec then return rec end
  local key = keys.deploy(primary)
  local raw = self.storage:load(key)
  rec = raw and decode_record(key, raw, primary) or { name = primary, targets = {} }
  self.deploy_records[primary] = rec
  return rec
end

--- The keys of the deploy records in storage, as a set (one listing).
function M:deploy_records_listed()
  local set = {}
  for _, k in ipairs(self.storage:list(keys.DEPLOY_PREFIX, false) or {}) do set[k] = true end
  return set
end

--- The deploy records of order[first..last], by primary: one bulk read of
-- those `listed` has (deploy_records_listed). Read a batch at a time, so
-- 100k records never sit in memory at once; an active job's record in
-- memory is newer than storage's.
function M:load_deploy_batch(first, last, listed)
  local out, wanted, by_key = {}, {}, {}
  for i = first, last do
    local primary = self.order[i]
    if self.deploy_records[primary] then
      out[primary] = self.deploy_records[primary]
    else
      local k = keys.deploy(primary)
      if listed[k] then wanted[#wanted + 1], by_key[k] = k, primary end
    end
  end
  if #wanted == 0 then return out end
  for k, raw in pairs(self.storage:load_many(wanted)) do out[by_key[k]] = decode_record(k, raw, by_key[k]) end
  return out
end

function M:save_deploy_record(primary)
  local rec = self.deploy_records[primary]
  if not rec then return end
  local ok, err, code = self.storage:store(keys.deploy(primary), core.json_encode(rec))
  if not ok then log("error", "deploy_record_failed", { name = primary, error = err, code = code }) end
end

-- The files a target wrote, with their hashes (what start-up compares).
local function file_hashes(target, view)
  local out = {}
  for _, f in ipairs(target:files(view)) do out[f[1]] = keys.fast_hash(f[2]) end
  return out
end

-- Are the files recorded for a files target still on disk, unchanged?
local function files_intact(recorded)
  if type(recorded) ~= "table" or next(recorded) == nil then return false end
  for path, hash in pairs(recorded) do
    local data = core.read_file(path)
    if not data or keys.fast_hash(data) ~= hash then return false end
  end
  return true
end

--- Does target t need deploying for e's certificate of `serial` (start-up
-- and retries; a new certificate is always deployed)? view is given when the
-- job has the certificate with its key (a files target is compared then).
-- intact: whether tr's files were found intact, when the caller read them
-- already (start-up reads a batch's files in one call).
function M:deploy_needed(t, tr, serial, view, intact)
  if tr and tr.serial == serial and not tr.error then
    if not t.files then return false end
    if intact == nil then intact = files_intact(tr.files) end
    return not intact
  end
  if tr then return true end
  -- never recorded (storage from before deploy tracking): a files target is
  -- compared with what it would write; a function's result cannot be known
  if not t.files then return false end
  if not view then return true end
  return not t.files:current(view)
end

-- One attempt at deploying e's current certificate to its targets.
-- Returns true | nil, err.
function M:deploy_attempt(e, event, attempt)
  local failures = {}
  for _ = 1, AGAIN_MAX do
    e.deploy_again = nil
    failures = {}
    local cert = e.id and self.cache:get(e.id)
    if not cert then return true end -- dropped from the cache meanwhile: nothing to serve
    local view = {}
    for k, v in pairs(cert) do view[k] = v end
    view.event = event
    local key, kerr = self.storage:load(self:paths(e.primary).key)
    local rec = self:deploy_record(e.primary)
    for _, t in ipairs(self:deploy_targets()) do
      local tr = rec.targets[t.id]
      local ok, err
      if not key then
        ok, err = false, "private key cannot be read: " .. tostring(kerr)
      else
        view.key_pem = key
        local fresh = event ~= "redeploy"
        local ran, needed = pcall(self.deploy_needed, self, t, tr, cert.serial, view)
        if not ran then ok, err = false, tostring(needed)
        elseif fresh or needed then ok, err = self.hooks:notify("on_renewed", t.fn, view)
        elseif not tr and t.files then
          -- found in place (deployed before tracking began): record it
          ok = true
        else
          ok = nil -- nothing to do for this target
        end
      end
      local now = math.floor(core.now())
      if ok then
        rec.targets[t.id] = { serial = cert.serial, deployed_at = now, host = core.hostname(),
          files = t.files and file_hashes(t.files, view) or nil }
        self.deploy_dirty[e.primary] = true
        log("info", "deploy_done", { name = e.primary, target = t.id, serial = cert.serial, event = event })
      elseif ok == false then
        tr = tr or {}
        rec.targets[t.id] = tr
        tr.error, tr.failed_serial, tr.failed_at, tr.attempts = err, cert.serial, now, attempt
        self.deploy_dirty[e.primary] = true
        failures[#failures + 1] = t.id .. ": " .. tostring(err)
        log("error", "deploy_failed", { name = e.primary, target = t.id, serial = cert.serial, error = err,
          attempt = attempt })
      end
    end
    if not e.deploy_again then break end
    event = "renewed"
  end
  if #failures == 0 then return true end
  return nil, { message = "deploy failed: " .. table.concat(failures, "; ") }
end

--- Queue deploying e's current certificate (job "deploy:<primary>").
-- event: "obtained" | "renewed" | "reloaded" (a new certificate: every target
-- gets it, and a deploy waiting to retry an older one starts afresh) or
-- "redeploy" (a retry, or start-up found it differs: only the targets that
-- need it). A collector waits for its first attempt. Returns true if queued.
function M:submit_deploy(e, event, collector)
  if self.stopping or #self:deploy_targets() == 0 then return false end
  local job = JOB_PREFIX .. e.primary
  local st = self.jobs:status(job)
  if st and st.state == "waiting" and event ~= "redeploy" then self.jobs:cancel(job) end
  local queued = self.jobs:submit(job, function(attempt)
    if self.entries[e.primary] ~= e then return true end -- unmanaged meanwhile
    local ok, res, err = pcall(self.deploy_attempt, self, e, event, attempt)
    if not ok then res, err = nil, tostring(res) end
    self:collect(job, res and "deployed" or "deploy_failed")
    if res then self:alert_healed(e, "deploy")
    else self:alert_failed(e, "deploy", type(err) == "table" and tostring(err.message) or tostring(err), "deploy",
      { attempt = attempt }) end
    return res, err, not res and "deploy" or nil
  end)
  if not queued and st and st.state == "running" then e.deploy_again = true end
  if queued and collector then
    collector.waiting[job] = true
    collector.outstanding = collector.outstanding + 1
    collector.total = (collector.total or 0) + 1
  end
  if queued then self.deploy_retry[e.primary] = nil end
  return queued
end

--- A deploy job changed state (the job queue's on_state): keep the retry
-- set, put the retry time in the record, write it.
function M:deploy_state(primary, state)
  if state ~= "waiting" and state ~= "failed" and state ~= "done" then return end
  self:metrics_note_deploy(primary, state == "done")
  local st = self.jobs:status(JOB_PREFIX .. primary)
  local rec = self.deploy_records[primary]
  if state == "waiting" then
    self.deploy_retry[primary] = true
    self.wake:notify_all() -- the renew ticker wakes for the retry
  else
    self.deploy_retry[primary] = nil
  end
  if rec then
    for _, tr in pairs(rec.targets) do
      if tr.error then tr.next_attempt = (state == "waiting" and st) and st.next_attempt or nil end
    end
  end
  if self.deploy_dirty[primary] or state ~= "done" then
    self.deploy_dirty[primary] = nil
    self:save_deploy_record(primary)
  end
  if state ~= "waiting" then self.deploy_records[primary] = nil end -- storage has it
end

--- Re-submit the failed deploys whose retry time has come (the renew
-- ticker's wake-ups and every renew pass). Returns how many were queued.
function M:retry_deploys(collector)
  local n = 0
  local primaries = {}
  for primary in pairs(self.deploy_retry) do primaries[#primaries + 1] = primary end
  table.sort(primaries)
  local untracked = #self:deploy_targets() == 0 -- a reloaded policy dropped on_renewed
  for _, primary in ipairs(primaries) do
    local e = self.entries[primary]
    -- a retry that can never be submitted must leave the queue, or the renew
    -- ticker would wake for its past next_attempt again and again
    if not e or untracked then
      self.jobs:cancel(JOB_PREFIX .. primary)
      self.deploy_retry[primary] = nil
    elseif self:submit_deploy(e, "redeploy", collector) then
      n = n + 1
    end
  end
  return n
end

--- Start-up: read the records, then redeploy whatever differs from what
-- storage holds (deployed serial, last result, files on disk).
function M:redeploy_changed(collector)
  local targets = self:deploy_targets()
  if #targets == 0 then return 0 end
  local listed = self:deploy_records_listed()
  local n = 0
  for first = 1, #self.order, BATCH do
    local last = math.min(first + BATCH - 1, #self.order)
    n = n + self:redeploy_batch(first, last, self:load_deploy_batch(first, last, listed), collector)
  end
  return n
end

-- Which records of a batch have their files intact on disk: every file the
-- batch's records name, read in one C call (core.read_files). Returns a set
-- of the intact records' target tables.
local function intact_batch(records, targets)
  local paths, owners, hashes = {}, {}, {}
  for _, rec in pairs(records) do
    for _, t in ipairs(targets) do
      local tr = t.files and rec.targets[t.id]
      if tr and type(tr.files) == "table" and next(tr.files) ~= nil then
        for path, hash in pairs(tr.files) do
          paths[#paths + 1], owners[#paths + 1], hashes[#paths + 1] = path, tr, hash
        end
      end
    end
  end
  local intact = {}
  if #paths == 0 then return intact end
  local values = core.read_files(paths)
  for i = 1, #paths do
    local tr = owners[i]
    if intact[tr] == nil then intact[tr] = true end
    if not values[i] or keys.fast_hash(values[i]) ~= hashes[i] then intact[tr] = false end
  end
  return intact
end

function M:redeploy_batch(first, last, records, collector)
  local targets = self:deploy_targets()
  local intact = intact_batch(records, targets)
  local n = 0
  for i = first, last do
    local primary = self.order[i]
    local e = self.entries[primary]
    local serial = e.id and select(2, self.cache:facts(e.id))
    if serial and e.load_state == "ok" then
      local rec = records[primary]
      for _, t in ipairs(targets) do
        local tr = rec and rec.targets[t.id]
        if self:deploy_needed(t, tr, serial, nil, tr and (intact[tr] or false)) then
          log("info", "redeploying", { name = primary, target = t.id,
            reason = not tr and "not recorded" or tr.error and "last deploy failed"
              or tr.serial ~= serial and "deployed serial " .. tostring(tr.serial) .. " is not the stored one"
              or "deployed files missing or changed" })
          if self:submit_deploy(e, "redeploy", collector) then n = n + 1 end
          break
        end
      end
    end
  end
  return n
end

--- What status shows of e's deploys: nil without targets, else a list of
-- { target, state = "deployed"|"failed"|"outdated"|"unknown", serial,
-- deployed_at, host, error, attempts, next_attempt } (records: by primary,
-- from load_deploy_batch).
function M:deploy_status(primary, serial, records)
  local targets = self:deploy_targets()
  if #targets == 0 then return nil end
  local rec = records[primary]
  local out = {}
  for i, t in ipairs(targets) do
    local tr = rec and rec.targets[t.id]
    local row = { target = t.id, state = "unknown" }
    if tr then
      row.serial, row.deployed_at, row.host = tr.serial, tr.deployed_at, tr.host
      row.error, row.attempts, row.next_attempt = tr.error, tr.attempts, tr.next_attempt
      if tr.error then row.state = "failed"
      elseif serial and tr.serial == serial then row.state = "deployed"
      else row.state = "outdated" end
    end
    out[i] = row
  end
  return out
end

--- The files targets of the policy that write staples (staple = true).
function M:staple_targets()
  local out = {}
  for _, t in ipairs(self:deploy_targets()) do
    if t.files and t.files.o.staple then out[#out + 1] = t end
  end
  return out
end

--- Is a staple written anywhere besides the cache (a deploy target with
-- staple = true, ocsp.staple_files)? Where not, the OCSP pass and start-up
-- attach staples without a step per staple in Lua.
function M:staples_deployed()
  local listed = (self.policy.ocsp or {}).staple_files
  if type(listed) == "table" and next(listed) ~= nil then return true end
  return #self:staple_targets() > 0
end

--- The staple of cache entry id changed to der (nil: it has none any more):
-- write it where the policy's deploy.files targets serve the certificate,
-- reloading the server when the bytes changed, and, for a certificate of
-- ocsp.staple_files, beside its file (engine/staple_files.lua; both when the
-- policy manages that certificate too). Runs in the caller's loop task (the
-- OCSP pass's workers), so a pass, and `once`, ends with its staples written;
-- reloads of concurrent callers fold into one (deploy.lua). A target that
-- fails is logged (staple_deploy_failed), never raised. Returns true when a
-- staple file changed.
function M:deploy_staple(id, der)
  local changed = false
  if self.staple_files_by_id and self.staple_files_by_id[id] then changed = self:write_staple_file(id, der) == true end
  local targets = self.by_id[id] and self:staple_targets() or {}
  local cert = #targets > 0 and self.cache:get(id)
  if not cert then return changed end -- not managed, no target, or gone from the cache
  for _, t in ipairs(targets) do
    local ok, res = pcall(t.files.deploy_staple, t.files, cert, der)
    if not ok then
      log("error", "staple_deploy_failed", { name = cert.names[1], target = t.id, error = tostring(res) })
    elseif res == "written" or res == "removed" then
      changed = true
    end
  end
  return changed
end

return M
