--- certmaint.keys: the ONE place names become storage keys.
--
-- The layout is certmagic's (Caddy's), so certmaint and Caddy can share a tree:
--
--   certificates/<issuer>/<name>/<name>.crt | .key | .json
--   ocsp/<name>-<hash>
--   acme/<issuer>/users/<email>/<username>.json | .key
--   acme/<issuer>/challenge_tokens/<identifier>.json  (pending http-01 challenges)
--   locks/<lock name>.lock                      (lock names: "issue_cert_<name>")
--
-- plus one directory of our own that Caddy ignores:
--
--   journal/<transaction>/…   the file backend's commit journal (storage/file.lua)
--   locks/<lock name>.token   the last fencing token granted for that lock
--   certmaint/state/<name>.json   a failing renewal's retry state (keys.state)
--   certmaint/deploy/<name>.json  what was deployed where (keys.deploy)
--   certmaint/acme/orders/<issuer>/<name>.json  an ACME order in flight (keys.acme_order)
--   certmaint/acme/orders/<issuer>/<name>.key   the private key its CSR was made for,
--                                 stored before finalize (keys.acme_order_key, 0600)
--   certmaint/crl/<hash of the URL>.der  a CRL as downloaded, until its nextUpdate (keys.crl)
--
-- <name> is core.name_storage_key(name): the normalised name, "*" written
-- "wildcard_", IPv6 ':' written '-', names too long for a path component
-- hashed to "h_<32 hex>" (see core/name.c).  <issuer> is issuer_key() of the
-- CA's directory URL, as certmagic's ACMEIssuer.IssuerKey + KeyBuilder.Safe.
--
-- A name that does not normalise is a caller's bug by the time it reaches a
-- key builder (policies normalise names when they load), so the builders
-- raise; keys.normalize() is the non-raising check for input.
local core = require "certmaint.core"

local M = {}

M.CERTS_PREFIX = "certificates"
M.OCSP_PREFIX = "ocsp"
M.ACME_PREFIX = "acme"
M.LOCKS_PREFIX = "locks"
M.STATE_PREFIX = "certmaint/state"
M.DEPLOY_PREFIX = "certmaint/deploy"
M.ACME_ORDERS_PREFIX = "certmaint/acme/orders"
M.CRL_PREFIX = "certmaint/crl"
M.ALERTS_PREFIX = "certmaint/alerts"
--- certmagic's lock name prefix for obtaining or renewing a certificate.
M.ISSUE_LOCK_PREFIX = "issue_cert_"

local function check_string(v, what, level)
  if type(v) ~= "string" then
    error(string.format("keys.%s: expected a string, got %s", what, type(v)), level + 1)
  end
end

--- keys.normalize(name) -> normalized, kind | nil, err, "invalid"
-- kind is "dns", "wildcard", "ipv4" or "ipv6".
function M.normalize(name)
  check_string(name, "normalize", 2)
  return core.name_normalize(name)
end

--- keys.name_key(name) -> the storage key (one path component) of a name.
-- Raises if the name is not valid (see keys.normalize).
function M.name_key(name)
  check_string(name, "name_key", 2)
  local key, err = core.name_storage_key(name)
  if not key then error("keys: " .. err, 2) end
  return key
end

--- keys.is_hashed(name_key) -> true when the name was too long and is hashed
-- (its site's .json must then carry the full name).
function M.is_hashed(name_key)
  return type(name_key) == "string" and name_key:match("^h_%x+$") ~= nil
end

--- keys.safe(str): certmagic's KeyBuilder.Safe, for components that are not
-- certificate names (issuer keys, e-mail addresses, lock names): lower-case,
-- trimmed, ' ' -> '_', '+' -> '_plus_', '*' -> 'wildcard_', ':' -> '-',
-- '..' removed, then everything but [%w_@.-] dropped.  Idempotent.
function M.safe(str)
  check_string(str, "safe", 2)
  str = str:lower():match("^%s*(.-)%s*$")
  -- One left-to-right pass like Go's strings.Replacer ('..' consumes both dots).
  local out, i, n = {}, 1, #str
  while i <= n do
    local c = str:sub(i, i)
    if c == "." and str:sub(i + 1, i + 1) == "." then
      i = i + 2
    else
      if c == " " then c = "_"
      elseif c == "+" then c = "_plus_"
      elseif c == "*" then c = "wildcard_"
      elseif c == ":" then c = "-"
      end
      out[#out + 1] = c
      i = i + 1
    end
  end
  str = table.concat(out):gsub("[^%w_@.%-]", "")
  -- Dropping characters can bring dots together again ("a.[.b"); a path
  -- component must never be "." or "..", so squeeze until none are left.
  repeat
    local count
    str, count = str:gsub("%.%.", "")
  until count == 0
  if str == "." then str = "" end
  return str
end

local function percent_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- keys.issuer_key(directory_url_or_name) -> the issuer's folder name.
-- A URL becomes host[:port] plus its path with '/' and '\' as '-', then made
-- Safe: "https://127.0.0.1:14000/dir" -> "127.0.0.1-14000-dir",
-- "https://acme-v02.api.letsencrypt.org/directory" ->
-- "acme-v02.api.letsencrypt.org-directory".  Anything else (an issuer's own
-- name such as "local") is only made Safe.
function M.issuer_key(url)
  check_string(url, "issuer_key", 2)
  local rest = url:match("^%a[%w+.%-]*://(.*)$")
  local key
  if rest then
    local authority, path = rest:match("^([^/?#]*)([^?#]*)")
    local host = authority:gsub("^.*@", "") -- userinfo is not part of Go's URL.Host
    path = percent_decode(path):gsub("[/\\]", "-"):gsub("^%-+", ""):gsub("%-+$", "")
    key = host
    if path ~= "" then key = key .. "-" .. path end
  else
    key = url
  end
  key = M.safe(key)
  if key == "" then error(string.format("keys.issuer_key: %q gives an empty key", url), 2) end
  return key
end

-- Issuer keys already found safe. A store has one or a few issuers, and every
-- key builder checks its issuer, so each is checked once (keys.safe costs
-- grow with the key's length). Bounded, in case a caller makes keys up.
local checked_issuers, checked_count = {}, 0
local MAX_CHECKED = 256

local function check_issuer(issuer_key, what)
  if checked_issuers[issuer_key] then return end
  check_string(issuer_key, what, 3)
  if issuer_key == "" or M.safe(issuer_key) ~= issuer_key then
    error(string.format("keys.%s: %q is not an issuer key (use keys.issuer_key)", what,
      issuer_key), 3)
  end
  if checked_count >= MAX_CHECKED then checked_issuers, checked_count = {}, 0 end
  checked_issuers[issuer_key] = true
  checked_count = checked_count + 1
end

--- keys.certs_prefix(issuer_key) -> "certificates/<issuer>"
function M.certs_prefix(issuer_key)
  check_issuer(issuer_key, "certs_prefix")
  return M.CERTS_PREFIX .. "/" .. issuer_key
end

--- keys.site(issuer_key, name) -> "certificates/<issuer>/<namekey>"
function M.site(issuer_key, name)
  check_issuer(issuer_key, "site")
  return M.CERTS_PREFIX .. "/" .. issuer_key .. "/" .. M.name_key(name)
end

local function site_file(prefix, issuer_key, name, ext, what)
  check_issuer(issuer_key, what)
  local nk = M.name_key(name)
  return prefix .. "/" .. issuer_key .. "/" .. nk .. "/" .. nk .. ext
end

--- keys.cert(issuer_key, name) -> ".../<namekey>/<namekey>.crt"
function M.cert(issuer_key, name)
  return site_file(M.CERTS_PREFIX, issuer_key, name, ".crt", "cert")
end

--- keys.private_key(issuer_key, name) -> ".../<namekey>/<namekey>.key"
function M.private_key(issuer_key, name)
  return site_file(M.CERTS_PREFIX, issuer_key, name, ".key", "private_key")
end

--- keys.meta(issuer_key, name) -> ".../<namekey>/<namekey>.json"
function M.meta(issuer_key, name)
  return site_file(M.CERTS_PREFIX, issuer_key, name, ".json", "meta")
end

--- keys.site_files(issuer_key, name) -> {site=, crt=, key=, meta=, cert=, private_key=}
-- The keys of a site from one name_key call and one issuer check (what a bulk
-- load wants: keys.cert + keys.private_key + keys.meta + keys.site would
-- normalise the name four times). crt/key and cert/private_key are the same
-- two keys under both spellings (cert/private_key as keys.cert and
-- keys.private_key, crt/key as the file extensions).
function M.site_files(issuer_key, name)
  check_issuer(issuer_key, "site_files")
  local nk = M.name_key(name)
  local site = M.CERTS_PREFIX .. "/" .. issuer_key .. "/" .. nk
  local base = site .. "/" .. nk
  local crt, key = base .. ".crt", base .. ".key"
  return { site = site, crt = crt, key = key, meta = base .. ".json", cert = crt, private_key = key }
end

--- keys.cert_files(issuer_key, names [, with_keys]) -> crts [, private_keys]:
-- keys.cert (and with with_keys keys.private_key) of every name of the list,
-- from one issuer check and one concatenation a key (a bulk load's batch).
function M.cert_files(issuer_key, names, with_keys)
  check_issuer(issuer_key, "cert_files")
  local prefix = M.CERTS_PREFIX .. "/" .. issuer_key .. "/"
  local storage_key = core.name_storage_key
  local crts, key_files = {}, with_keys and {} or nil
  for i = 1, #names do
    local name = names[i]
    check_string(name, "cert_files", 2)
    local nk, err = storage_key(name)
    if not nk then error("keys: " .. err, 2) end
    if key_files then
      local base = prefix .. nk .. "/" .. nk
      crts[i], key_files[i] = base .. ".crt", base .. ".key"
    else
      crts[i] = prefix .. nk .. "/" .. nk .. ".crt"
    end
  end
  return crts, key_files
end

--- keys.fast_hash(data) -> FNV-1a 32 in hex (certmagic's fastHash), what
-- certmagic puts after the name in an OCSP staple's key (of the PEM bundle).
-- Like Go's fmt "%x" it has no leading zeros (so "1a2b3c", not "001a2b3c"):
-- the key must be the one Caddy writes and looks for.
function M.fast_hash(data)
  check_string(data, "fast_hash", 2)
  local _, h = core.fnv1a32(data)
  return string.format("%x", h)
end

--- keys.ocsp(name, hash) -> "ocsp/<namekey>-<hash>" ("ocsp/<hash>" when name
-- is nil, as certmagic for a certificate without names).
function M.ocsp(name, hash)
  check_string(hash, "ocsp", 2)
  if not hash:match("^[%w]+$") then
    error(string.format("keys.ocsp: hash %q must be letters and digits", hash), 2)
  end
  if name == nil then return M.OCSP_PREFIX .. "/" .. hash end
  return M.OCSP_PREFIX .. "/" .. M.name_key(name) .. "-" .. hash
end

--- keys.lock_name(name) -> "issue_cert_<namekey>": the name to pass to
-- storage:lock() around obtaining or renewing the certificate for name.
function M.lock_name(name)
  return M.ISSUE_LOCK_PREFIX .. M.name_key(name)
end

--- keys.lock_file(lock_name) -> "locks/<safe lock name>.lock": where the file
-- backend keeps a lock (certmagic's FileStorage.lockFilename).
function M.lock_file(lock_name)
  check_string(lock_name, "lock_file", 2)
  local safe = M.safe(lock_name)
  if safe == "" then error(string.format("keys.lock_file: %q gives an empty key", lock_name), 2) end
  return M.LOCKS_PREFIX .. "/" .. safe .. ".lock"
end

--- keys.lock(name) -> "locks/issue_cert_<namekey>.lock": the lock file of the
-- certificate for name (storage:lock() also accepts this key as the name).
function M.lock(name)
  return M.lock_file(M.lock_name(name))
end

--- keys.state(name) -> "certmaint/state/<namekey>.json": the renewal retry
-- state of name's certificate (attempts, last error, next attempt), kept in
-- storage so `certmaint status` in another process sees it.  Caddy ignores it.
function M.state(name)
  return M.STATE_PREFIX .. "/" .. M.name_key(name) .. ".json"
end

--- keys.deploy(name) -> "certmaint/deploy/<namekey>.json": what the policy's
-- on_renewed deployed of name's certificate, per target (serial, time, last
-- error), so a failed deploy is retried and a restart redeploys what differs
-- (engine/deploy.lua).  Caddy ignores it.
function M.deploy(name)
  return M.DEPLOY_PREFIX .. "/" .. M.name_key(name) .. ".json"
end

--- keys.alert(name) -> "certmaint/alerts/<namekey>.json": the open problems
-- of name's certificate the policy was told of (on_failure, on_expiring),
-- so a restart neither pages again nor forgets to tell the recovery
-- (engine/alerts.lua). Caddy ignores it.
function M.alert(name)
  return M.ALERTS_PREFIX .. "/" .. M.name_key(name) .. ".json"
end

--- keys.crl(url) -> "certmaint/crl/<32 hex>.der": the CRL downloaded from
-- url (DER, as served), shared by every instance on the storage until its
-- nextUpdate (engine/crl.lua; the clean pass deletes it after). The hex is
-- the first half of SHA-256 of the URL: any URL, one path component, no
-- two URLs on one key.  Caddy ignores it.
function M.crl(url)
  check_string(url, "crl", 2)
  if url == "" then error("keys.crl: the URL is empty", 2) end
  return M.CRL_PREFIX .. "/" .. core.sha256_hex(url):sub(1, 32) .. ".der"
end

local EMPTY_EMAIL = "default" -- certmagic's folder for accounts without e-mail

--- keys.acme_users(ca) -> "acme/<issuer>/users"
function M.acme_users(ca)
  check_string(ca, "acme_users", 2)
  return M.ACME_PREFIX .. "/" .. M.issuer_key(ca) .. "/users"
end

--- keys.challenge_tokens(ca) -> "acme/<issuer>/challenge_tokens"
function M.challenge_tokens(ca)
  check_string(ca, "challenge_tokens", 2)
  return M.ACME_PREFIX .. "/" .. M.issuer_key(ca) .. "/challenge_tokens"
end

--- keys.challenge_token(ca, identifier) ->
-- "acme/<issuer>/challenge_tokens/<Safe(identifier)>.json": where a pending
-- http-01 (or tls-alpn-01) challenge is kept so any instance sharing the
-- storage can answer it (certmagic's distributedSolver.challengeTokensKey:
-- one file an identifier, the identifier made Safe, not a name key).
function M.challenge_token(ca, identifier)
  check_string(identifier, "challenge_token", 2)
  local safe = M.safe(identifier)
  if safe == "" then
    error(string.format("keys.challenge_token: identifier %q gives an empty key", identifier), 2)
  end
  return M.challenge_tokens(ca) .. "/" .. safe .. ".json"
end

--- keys.acme_account(ca, email) -> {prefix=, registration=, private_key=}
-- ca: the directory URL or an issuer key; email may be nil or "".
--   "acme/<issuer>/users/<email>/<username>.json" and ".key", where username
-- is the part of the e-mail before '@' (certmagic's storageSafeUserKey).
function M.acme_account(ca, email)
  check_string(ca, "acme_account", 2)
  if email ~= nil then check_string(email, "acme_account", 2) end
  if email == nil or email == "" then email = EMPTY_EMAIL end
  email = email:lower()
  local at = email:find("@", 1, true)
  local username
  if not at then username = email
  elseif at == 1 then username = email:sub(2)
  else username = email:sub(1, at - 1) end
  local email_key = M.safe(email)
  if email_key == "" then
    error(string.format("keys.acme_account: e-mail %q gives an empty key", email), 2)
  end
  local prefix = M.acme_users(ca) .. "/" .. email_key
  local reg_file = M.safe(username ~= "" and username or "registration")
  local key_file = M.safe(username ~= "" and username or "private")
  return {
    prefix = prefix,
    registration = prefix .. "/" .. reg_file .. ".json",
    private_key = prefix .. "/" .. key_file .. ".key",
  }
end

--- keys.acme_order(issuer_key, name) -> "certmaint/acme/orders/<issuer>/<namekey>.json":
-- the URL of the ACME order open for the certificate whose first name is name,
-- so a restart resumes it (acme/order.lua). Caddy ignores it.
function M.acme_order(issuer_key, name)
  check_issuer(issuer_key, "acme_order")
  return M.ACME_ORDERS_PREFIX .. "/" .. issuer_key .. "/" .. M.name_key(name) .. ".json"
end

--- keys.acme_order_key(issuer_key, name) -> "certmaint/acme/orders/<issuer>/<namekey>.key":
-- the private key of the CSR the open order was finalized with, stored before
-- finalize so that whoever resumes the order (after a crash, or another
-- instance of a cluster) can take the certificate the CA issued for it
-- instead of ordering a second one. A private key: 0600 in every backend.
function M.acme_order_key(issuer_key, name)
  check_issuer(issuer_key, "acme_order_key")
  return M.ACME_ORDERS_PREFIX .. "/" .. issuer_key .. "/" .. M.name_key(name) .. ".key"
end

return M
