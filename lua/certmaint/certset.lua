--- certmaint.certset: a certificate set — the `.crt`, `.key` and `.json` of one
-- site, which must always match — read, written and repaired as one thing.
--
--   local set = certset.paths(issuer_key, "example.com")
--   local state, pem, facts = certset.read(storage, set, names)
--   certset.write(storage, set, { crt = chain, key = key_pem, meta = json }, lock)
--
-- Writing is one storage commit (put all three, fenced by the renewal's lock):
-- the backend makes it all-or-nothing, and storage:recover() finishes or drops
-- a commit a crash cut short. Reading checks the key against the certificate
-- only when the site looks interrupted (a missing key, or a recovery that
-- still had work to do): parsing a key costs ~0.5 ms and 100k start-ups must
-- not pay it.
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local M = {}

local function log(level, event, fields) core.log(level, event, fields or {}) end

--- The storage keys of a site's set: { site=, crt=, key=, meta= }.
function M.paths(issuer_key, primary)
  return keys.site_files(issuer_key, primary)
end

--- The .crt keys of many sites (and with with_keys their .key keys): lists
-- in the order of primaries (keys.cert_files; a bulk load's batch).
function M.cert_files(issuer_key, primaries, with_keys)
  return keys.cert_files(issuer_key, primaries, with_keys)
end

--- Do two name lists hold the same names (order and duplicates aside, as
-- cache:add_many compares them)?  Both ways: comparing lengths let a
-- duplicate hide a missing name ({a, b} against {a, a}).
function M.same_names(a, b)
  local in_a, in_b = {}, {}
  for _, n in ipairs(a) do in_a[n] = true end
  for _, n in ipairs(b) do
    if not in_a[n] then return false end
    in_b[n] = true
  end
  for n in pairs(in_a) do if not in_b[n] then return false end end
  return true
end

--- The metadata (.json) of a set, in certmagic's shape (CertificateResource:
-- sans, issuer_data). extra (optional): issuer_data = a table the issuer
-- returned (an ACME issuer's url, ca, account: certmagic's acme.Certificate),
-- merged into issuer_data; renewal_info = the ARI record in acmez's shape
-- (issuer_data.renewal_info, where certmagic keeps it); key_type = the key's
-- type, kept under "certmaint" (Caddy ignores it) so reuse_key can tell.
function M.meta(names, issuer_description, serial, extra)
  local issuer_data = {}
  if extra and type(extra.issuer_data) == "table" then
    for k, v in pairs(extra.issuer_data) do issuer_data[k] = v end
  end
  issuer_data.issuer, issuer_data.serial = issuer_description, serial
  if extra and extra.renewal_info then issuer_data.renewal_info = extra.renewal_info end
  return core.json_encode({
    sans = names,
    issuer_data = issuer_data,
    certmaint = extra and extra.key_type and { key_type = extra.key_type } or nil,
  }, { pretty = true })
end

--- Classify a stored certificate PEM against the names the policy wants:
-- "ok", pem, facts | "names_changed", pem, facts | nil, err, code.
function M.classify(set, pem, names)
  local facts, err, code = core.cert_parse(pem)
  if not facts then return nil, set.crt .. ": " .. err, code end
  if not M.same_names(facts.names, names) then return "names_changed", pem, facts end
  return "ok", pem, facts
end

--- Read a set: certificate and key in one load_many (one request to etcd,
-- one C call for files). Returns "ok", pem, facts | "missing" |
-- "names_changed", pem, facts | nil, err, code. A missing key is always a
-- mismatch; opts.check_key also checks that a present key belongs to the
-- certificate (start-up must not parse 100k keys, so only when asked).
function M.read(storage, set, names, opts)
  local found, failed = storage:load_many { set.crt, set.key }
  local crt = found[set.crt]
  if not crt then
    local f = failed[set.crt] or {}
    if f.code == "ENOENT" then return "missing" end
    return nil, tostring(f.message or ("cannot read " .. set.crt)), f.code or "EIO"
  end
  local state, pem, facts = M.classify(set, crt, names)
  if not state then return nil, pem, facts end
  local key = found[set.key]
  if not key or (opts and opts.check_key and not core.key_matches(crt, key)) then
    return nil, set.crt .. ": private key missing or does not match the certificate", "mismatch"
  end
  return state, pem, facts
end

--- Write a whole set as one commit. files = { crt=, key=, meta= }; fence is
-- the lock the writer holds; deletes (optional) a list of keys removed in the
-- same commit (the issuer's order state). Returns true | nil, err, code
-- ("fenced" when another instance has taken the lock since).
function M.write(storage, set, files, fence, deletes)
  local tx = { put = { [set.key] = files.key, [set.crt] = files.crt, [set.meta] = files.meta }, fence = fence }
  if deletes and #deletes > 0 then tx.delete = deletes end
  return storage:commit(tx)
end

--- Finish whatever a crash cut short in storage (interrupted commits), once
-- per start-up. Returns true, finished_any | nil, err.
function M.recover(storage)
  local done, dropped = storage:recover()
  if done == nil then
    log("error", "storage_recover_failed", { storage = storage:describe(), error = dropped })
    return nil, dropped
  end
  if done > 0 then log("warn", "repaired_from_staging", { commits = done }) end
  if dropped > 0 then log("info", "storage_discarded_uncommitted", { commits = dropped }) end
  return true, done > 0
end

return M
