-- The invariants tests/integration/failpoints.sh checks after every case
-- (lua5.4 on certmaint's module; one run a case):
--
--   lua5.4 failpoints_check.lua file ROOT ISSUER_KEY DEPLOY_DIR NAME...
--   lua5.4 failpoints_check.lua etcd URL,PREFIX ISSUER_KEY DEPLOY_DIR NAME...
--
--  1. every managed NAME has a certificate, valid now, whose key matches it,
--     and its metadata;
--  2. every stored value parses as what its key says it is (certificate
--     chain, private key, JSON, OCSP response, lock record, time);
--  3. (file) private keys and every other stored file 0600, lock and token
--     files 0644 (certmagic's), directories 0700; deployed keys 0600;
--  4. (file) no temp or aside file of an unfinished write anywhere in the
--     storage or the deploy folder, and no transaction left in the journal
--     (the case backdates them a tick first: they are all "older than a tick");
--  5. nothing deployed that is not in storage: each deployed chain and key is
--     the stored certificate's, and no other site is deployed.
-- Prints one "violation: ..." line each and exits 1 if there is any.
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local lfs = require "lfs"

local kind, where, issuer, deploy_dir = arg[1], arg[2], arg[3], arg[4]
local names = {}
for i = 5, #arg do names[#names + 1] = arg[i] end
assert(kind == "file" or kind == "etcd", "usage: failpoints_check.lua file|etcd WHERE ISSUER_KEY DEPLOY_DIR NAME...")

local violations = {}
local function violation(fmt, ...) violations[#violations + 1] = string.format(fmt, ...) end

local storage
if kind == "file" then
  storage = require("certmaint.storage.file").new { root = where }
else
  local url, prefix = where:match("^([^,]+),(.+)$")
  storage = require("certmaint.storage.etcd").new { endpoints = { url }, prefix = prefix }
end

local now = core.now()

-- 2. every stored value parses
local function parses(key, value)
  local base = key:match("[^/]+$")
  if key:match("^locks/") then
    return core.json_decode(value) ~= nil, "a lock record (JSON)"
  elseif key:match("%.crt$") or key:match("%.pem$") then
    return core.cert_parse(value) ~= nil, "a certificate chain"
  elseif key:match("%.key$") then
    return core.key_public_pem(value) ~= nil, "a private key"
  elseif key:match("%.json$") then
    return core.json_decode(value) ~= nil, "JSON"
  elseif key:match("^ocsp/") then
    return core.ocsp_response_peek(value) ~= nil, "an OCSP response"
  elseif key == "certmaint/last_clean" then
    return value:match("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z\n$") ~= nil, "an RFC 3339 time"
  elseif key:match("^certmaint/state/") or key:match("^certmaint/") then
    return core.json_decode(value) ~= nil, "JSON"
  end
  return false, "a known kind of value (" .. base .. ")"
end

local all, err = storage:list("", true)
if not all then
  violation("storage cannot be listed: %s", tostring(err))
  all = {}
end
local stored = {}
for _, key in ipairs(all) do
  local value, lerr = storage:load(key)
  if not value then
    violation("%s is listed but cannot be read: %s", key, tostring(lerr))
  else
    stored[key] = value
    local ok, what = parses(key, value)
    if not ok then violation("%s does not parse as %s", key, what) end
  end
end

-- 1. every managed name: a valid certificate whose key matches
for _, name in ipairs(names) do
  local ck, kk, mk = keys.cert(issuer, name), keys.private_key(issuer, name), keys.meta(issuer, name)
  local cert, key = stored[ck], stored[kk]
  if not cert then violation("%s: no certificate (%s)", name, ck)
  elseif not key then violation("%s: no private key (%s)", name, kk)
  else
    local facts = core.cert_parse(cert)
    if facts and not (facts.not_before <= now + 60 and now < facts.not_after) then
      violation("%s: the certificate is not valid now", name)
    end
    local found = false
    for _, n in ipairs(facts and facts.names or {}) do if n == name then found = true end end
    if facts and not found then violation("%s: the certificate does not name it", name) end
    local ok, merr = core.key_matches(cert, key)
    if not ok then violation("%s: the key does not match the certificate: %s", name, tostring(merr)) end
  end
  if not stored[mk] then violation("%s: no metadata (%s)", name, mk) end
end

-- 3, 4 (file): modes, temp files, journal
local function is_side_file(base)
  return base:match("^%..*%.tmp%-%x+$") ~= nil or base:match("^%..*%.stale%-%x+$") ~= nil
end
local function walk(dir, rel, each)
  local ok, iter, state = pcall(lfs.dir, dir)
  if not ok then return end
  for entry in iter, state do
    if entry ~= "." and entry ~= ".." then
      local path, r = dir .. "/" .. entry, rel == "" and entry or (rel .. "/" .. entry)
      local attr = lfs.symlinkattributes(path)
      each(path, r, entry, attr)
      if attr and attr.mode == "directory" then walk(path, r, each) end
    end
  end
end
local function mode_of(attr) return attr.permissions end -- "rw-------"
if kind == "file" then
  walk(where, "", function(_, rel, base, attr)
    if is_side_file(base) then violation("%s: a temp file of an unfinished write is left", rel) return end
    if rel:match("^journal/") then violation("%s: a transaction is left in the journal", rel) return end
    if attr.mode == "directory" then
      if mode_of(attr) ~= "rwx------" then violation("%s/: mode %s, not 0700", rel, mode_of(attr)) end
    elseif rel:match("^locks/") then
      if mode_of(attr) ~= "rw-r--r--" then violation("%s: mode %s, not 0644", rel, mode_of(attr)) end
    elseif mode_of(attr) ~= "rw-------" then
      violation("%s: mode %s, not 0600", rel, mode_of(attr))
    end
  end)
end
walk(deploy_dir, "", function(_, rel, base, attr)
  if is_side_file(base) then violation("deployed %s: a temp file of an unfinished write is left", rel) end
  if base == "privkey.pem" and mode_of(attr) ~= "rw-------" then
    violation("deployed %s: mode %s, not 0600", rel, mode_of(attr))
  end
end)

-- 5. nothing deployed that is not in storage
local managed = {}
for _, name in ipairs(names) do managed[name] = true end
walk(deploy_dir, "", function(path, rel, base, attr)
  if attr.mode == "directory" then
    if not rel:find("/") and not managed[base] then violation("deployed %s: not a managed name", rel) end
    return
  end
  local site = rel:match("^([^/]+)/")
  if not site then return end
  local f = assert(io.open(path, "rb"))
  local bytes = f:read("a")
  f:close()
  local cert, key = stored[keys.cert(issuer, site)], stored[keys.private_key(issuer, site)]
  if base == "fullchain.pem" and bytes ~= cert then
    violation("deployed %s is not the stored certificate of %s", rel, site)
  elseif base == "privkey.pem" and bytes ~= key then
    violation("deployed %s is not the stored key of %s", rel, site)
  end
end)

if storage.close then pcall(storage.close, storage) end
for _, v in ipairs(violations) do print("violation: " .. v) end
os.exit(#violations == 0 and 0 or 1)
