--- certmaint.acme.account: the ACME account, kept where certmagic (Caddy)
-- keeps it, so an account either one made is used by the other:
--
--   acme/<issuer>/users/<email>/<username>.json   the account object (acmez's
--       acme.Account: status, contact, termsOfServiceAgreed, orders, location,
--       externalAccountBinding when one was sent)
--   acme/<issuer>/users/<email>/<username>.key    its private key (PEM, 0600)
--
-- (keys.acme_account; "default" when there is no e-mail.) A new account gets an
-- ES256 (P-256) key, agrees to the terms, gives mailto:<email> as contact and,
-- with eab = { kid =, hmac_key = }, an External Account Binding (RFC 8555
-- 7.3.4, HS256). A stored key without a location (an account object that lost
-- it) is looked up with onlyReturnExisting. Creating takes the storage lock
-- certmagic takes ("register_acme_account_<email>"), so instances sharing a
-- storage register once.
--
--   account.get(client, storage, opts) -> acct | nil, err, code
--     opts = { email =, eab = { kid =, hmac_key = }, stale = <account URL the CA
--              no longer knows: registered again with the same key> }
--     acct = { url = <account URL>, signer = core.jws_signer, key_pem =,
--              contact = {...}, status = }
local core = require "certmaint.core"
local keys = require "certmaint.keys"
local client_mod = require "certmaint.acme.client"

local M = {}

local function json_array(t) return setmetatable(t, core.json_array_mt) end

local function lock_name(email)
  if email and email ~= "" then return "register_acme_account_" .. email end
  return "register_acme_account"
end

local function fail(msg, code, final)
  return nil, client_mod.failure(msg, code, final)
end

-- The stored account, or nil (nothing stored), or nil, err, code (damaged).
-- A location equal to `stale` is dropped (the CA forgot that account).
local function load(storage, files, stale)
  local key_pem, err, code = storage:load(files.private_key)
  if not key_pem then
    if code == "ENOENT" then return nil end
    return fail("reading the ACME account key " .. files.private_key .. ": " .. tostring(err), code)
  end
  local signer
  signer, err, code = core.jws_signer(key_pem)
  if not signer then
    return fail("the ACME account key " .. files.private_key .. " is unusable: " .. tostring(err), code or "key", true)
  end
  local reg = {}
  local text = storage:load(files.registration)
  if text then
    local doc, derr = core.json_decode(text, 1024 * 1024)
    if type(doc) == "table" then reg = doc
    else core.log("warn", "acme_account_unreadable", { key = files.registration, error = derr }) end
  end
  local url = type(reg.location) == "string" and reg.location ~= "" and reg.location or nil
  if url and url == stale then url = nil end
  return {
    url = url,
    status = reg.status, contact = reg.contact, reg = reg,
    signer = signer, key_pem = key_pem,
  }
end

local function save(storage, files, acct)
  local reg = {
    status = acct.status or "valid",
    contact = json_array(acct.contact or {}),
    termsOfServiceAgreed = true,
    orders = acct.orders or "",
    location = acct.url,
    externalAccountBinding = acct.eab_jws,
  }
  local text = assert(core.json_encode(reg, { pretty = true }))
  local ok, err, code = storage:store(files.private_key, acct.key_pem)
  if not ok then return nil, err, code end
  ok, err, code = storage:store(files.registration, text)
  if not ok then return nil, err, code end
  return true
end

--- newAccount: create (or, with only_existing, find) the account of signer.
local function new_account(client, signer, opts, only_existing)
  local dir, err, code = client:directory()
  if not dir then return nil, err, code end
  local payload = { termsOfServiceAgreed = true }
  if only_existing then payload.onlyReturnExisting = true end
  if opts.email and opts.email ~= "" then payload.contact = json_array({ "mailto:" .. opts.email }) end
  local eab_jws
  if opts.eab and not only_existing then
    if dir.meta and dir.meta.externalAccountRequired == false then
      core.log("info", "acme_eab_not_required", { directory = client.directory_url })
    end
    local protected = assert(core.json_encode({ alg = "HS256", kid = opts.eab.kid, url = dir.newAccount }))
    local text, herr, hcode = core.jws_hmac(opts.eab.hmac_key, protected, signer:jwk())
    if not text then return fail("external account binding: " .. tostring(herr), hcode or "eab", true) end
    eab_jws = core.json_decode(text)
    payload.externalAccountBinding = eab_jws
  end
  local resp
  resp, err, code = client:post(dir.newAccount, assert(core.json_encode(payload)), signer, nil, nil, "acme.account")
  if not resp then return nil, err, code end
  if not resp.location then
    return fail("newAccount at " .. dir.newAccount .. " answered without the account URL (Location)", "acme:account")
  end
  local body = resp.json or {}
  return {
    url = resp.location, status = body.status or "valid",
    contact = type(body.contact) == "table" and body.contact or (payload.contact or {}),
    orders = type(body.orders) == "string" and body.orders or nil,
    eab_jws = eab_jws,
  }
end

--- The account to use (see the header): stored, looked up, or made.
function M.get(client, storage, opts)
  local files = keys.acme_account(client.directory_url, opts.email)
  local acct, err, code = load(storage, files, opts.stale)
  if acct and acct.url then return acct end
  if err then return nil, err, code end

  local lname = lock_name(opts.email)
  local lock
  lock, err, code = storage:lock(lname)
  if not lock then return nil, err, code end
  local ok, res, rerr, rcode = pcall(function()
    -- another instance may have made it while we waited
    local a, e, c = load(storage, files, opts.stale)
    if a and a.url then return a end
    if e then return nil, e, c end
    local signer, key_pem, made
    if a then
      signer, key_pem = a.signer, a.key_pem
      made, e, c = new_account(client, signer, opts, true)
      if not made and c == "acme:accountDoesNotExist" then made, e, c = new_account(client, signer, opts, false) end
    else
      key_pem, e, c = core.key_generate("p256")
      if not key_pem then return nil, e, c end
      signer, e, c = core.jws_signer(key_pem)
      if not signer then return nil, e, c end
      made, e, c = new_account(client, signer, opts, false)
    end
    if not made then return nil, e, c end
    made.signer, made.key_pem = signer, key_pem
    local saved, serr, scode = save(storage, files, made)
    if not saved then return nil, serr, scode end
    core.log("info", "acme_account_registered", { directory = client.directory_url, account = made.url,
      email = opts.email })
    return made
  end)
  storage:unlock(lock)
  if not ok then error(res, 0) end
  return res, rerr, rcode
end

return M
