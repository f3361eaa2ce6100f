--- certmaint.acme.challenges.tokens: pending http-01 challenges kept in
-- storage, so any instance sharing the storage can answer a validation that
-- another instance started (certmagic's distributed solving).
--
-- The key and the JSON are certmagic's, so Caddy and certmaint answer each
-- other's challenges on a shared tree:
--
--   acme/<issuer>/challenge_tokens/<Safe(identifier)>.json       (keys.challenge_token)
--   {"identifier":{"type":"dns","value":"a.example"},"keyAuthorization":"<token>.<thumbprint>",
--    "status":"pending","token":"<token>","type":"http-01","url":"<challenge url>"}
--
-- (acmez's acme.Challenge as certmagic marshals it). One file an identifier:
-- an identifier has one challenge in flight at a time, since obtaining takes
-- the storage lock of the name.
--
--   tokens.present(storage, issuer_key, chal)   -> true | nil, err, code
--   tokens.cleanup(storage, issuer_key, chal)   -> true | nil, err, code
--   tokens.lookup(storage, issuer_keys, host)   -> chal | nil, err, code ("ENOENT": none)
--   tokens.answer(storage, issuer_keys, req)    -> key_authorization | nil, why, code
--   tokens.responder(storage, issuer_keys)      -> handler for loop.serve (the miss path)
-- issuer_keys: one issuer key or a list (an instance answers for every CA it
-- is configured with, like certmagic trying each of cfg.Issuers). Storage may
-- wait: call these from a loop task.
local core = require "certmaint.core"
local keys = require "certmaint.keys"

local M = {}

M.PATH_PREFIX = "/.well-known/acme-challenge/"
M.MAX_TOKEN = 256         -- RFC 8555 tokens carry >= 128 bits; CAs send 43 characters
M.MAX_RECORD = 64 * 1024  -- a stored challenge larger than this is not ours

--- Is token a token this module writes or serves: base64url only, 1..MAX_TOKEN
-- characters (it becomes a path and a file name: no '/', '.', '%').
function M.valid_token(token)
  return type(token) == "string" and #token >= 1 and #token <= M.MAX_TOKEN
    and token:find("^[%w_%-]+$") ~= nil
end

local function check_chal(chal, what)
  if type(chal) ~= "table" then error(what .. ": chal must be a table, not " .. type(chal), 3) end
  if type(chal.identifier) ~= "string" or chal.identifier == "" then
    error(what .. ": chal.identifier must be a non-empty string", 3)
  end
end

-- The identifier type certmagic records: "ip" for an address, else "dns".
local function identifier_type(id)
  local _, kind = keys.normalize(id)
  if kind == "ipv4" or kind == "ipv6" then return "ip" end
  return "dns"
end

--- The JSON text stored for chal (sorted keys, what acmez marshals).
function M.encode(chal)
  check_chal(chal, "tokens.encode")
  local doc = {
    type = chal.type or "http-01",
    url = chal.url or "",
    status = "pending",
    token = chal.token,
    keyAuthorization = chal.key_authorization,
    identifier = { type = identifier_type(chal.identifier), value = chal.identifier },
  }
  local text, err = core.json_encode(doc)
  if not text then error("tokens.encode: " .. tostring(err), 2) end
  return text
end

--- Read a stored challenge: chal (this module's shape) | nil, err, "invalid".
function M.decode(text, where)
  where = where or "challenge token"
  local doc, err = core.json_decode(text, M.MAX_RECORD)
  if not doc then return nil, string.format("%s: %s", where, err), "invalid" end
  if type(doc) ~= "table" or type(doc.identifier) ~= "table" or type(doc.identifier.value) ~= "string"
    or type(doc.token) ~= "string" or type(doc.keyAuthorization) ~= "string" then
    return nil, where .. ": not a challenge (want identifier.value, token and keyAuthorization strings)",
      "invalid"
  end
  return {
    identifier = doc.identifier.value,
    type = type(doc.type) == "string" and doc.type or "http-01",
    token = doc.token,
    key_authorization = doc.keyAuthorization,
    url = type(doc.url) == "string" and doc.url or nil,
  }
end

--- Keep chal in storage until cleanup: true | nil, err, code.
function M.present(storage, issuer_key, chal)
  check_chal(chal, "tokens.present")
  if not M.valid_token(chal.token) then
    return nil, string.format("challenge for %s: token %q is not base64url", chal.identifier,
      tostring(chal.token):sub(1, 80)), "invalid"
  end
  if type(chal.key_authorization) ~= "string" or chal.key_authorization:sub(1, #chal.token + 1) ~= chal.token .. "." then
    error("tokens.present: chal.key_authorization must be \"<token>.<thumbprint>\"", 2)
  end
  local key = keys.challenge_token(issuer_key, chal.identifier)
  local ok, err, code = storage:store(key, M.encode(chal), { mode = "0600" })
  if not ok then
    return nil, string.format("%s challenge for %s: cannot keep the token in storage (%s): %s",
      chal.type or "http-01", chal.identifier, key, tostring(err)), code
  end
  return true
end

--- Forget chal: true | nil, err, code. A stored challenge of the identifier
-- with another token (a later one, from another instance) is left alone.
function M.cleanup(storage, issuer_key, chal)
  check_chal(chal, "tokens.cleanup")
  local key = keys.challenge_token(issuer_key, chal.identifier)
  local text, err, code = storage:load(key)
  if not text then
    if code == "ENOENT" then return true end
    return nil, string.format("challenge for %s: %s: %s", chal.identifier, key, tostring(err)), code
  end
  local stored = M.decode(text, key)
  if stored and stored.token ~= chal.token then return true end
  local ok, derr, dcode = storage:delete(key)
  if not ok and dcode ~= "ENOENT" then
    return nil, string.format("challenge for %s: cannot delete %s: %s", chal.identifier, key, tostring(derr)), dcode
  end
  return true
end

local function issuer_list(issuer_keys)
  if type(issuer_keys) == "string" then return { issuer_keys } end
  if type(issuer_keys) ~= "table" then error("tokens: issuer_keys must be a string or a list", 3) end
  return issuer_keys
end

--- The host of a Host header, as an identifier: port dropped, IPv6 brackets
-- removed, lower case, no trailing dot; nil when it is not a host.
function M.host_identifier(host)
  if type(host) ~= "string" or host == "" or #host > 300 then return nil end
  local h = host:match("^%[([%x:%.]+)%]:?%d*$")
  if not h then
    h = host:match("^([^:%[%]]+):%d+$") or host
    if h:find("[:%[%]/\\%s]") then return nil end
  end
  h = h:lower():gsub("%.$", "")
  if h == "" then return nil end
  return h
end

--- The stored challenge for identifier host (certmagic's getACMEChallengeInfo
-- over storage): chal | nil, err, code ("ENOENT" when none of the issuers has one).
function M.lookup(storage, issuer_keys, host)
  local id = M.host_identifier(host)
  if not id then return nil, string.format("%q is not a host name", tostring(host)), "invalid" end
  for _, issuer_key in ipairs(issuer_list(issuer_keys)) do
    local key = keys.challenge_token(issuer_key, id)
    local text, err, code = storage:load(key)
    if text then return M.decode(text, key) end
    if code ~= "ENOENT" then return nil, string.format("%s: %s", key, tostring(err)), code end
  end
  return nil, "no challenge in storage for " .. id, "ENOENT"
end

--- The key authorization to answer req = {method=, path=, host=} with, when
-- storage holds a pending http-01 challenge for that host and token (the
-- host must match the identifier, as certmagic checks against DNS
-- rebinding): key_authorization | nil, why, code.
function M.answer(storage, issuer_keys, req)
  if req.method ~= "GET" and req.method ~= "HEAD" then return nil, "method " .. tostring(req.method), "method" end
  local path = req.path or ""
  if path:sub(1, #M.PATH_PREFIX) ~= M.PATH_PREFIX then return nil, "not a challenge path", "ENOENT" end
  local token = path:sub(#M.PATH_PREFIX + 1)
  if not M.valid_token(token) then return nil, "not a challenge token", "ENOENT" end
  local chal, err, code = M.lookup(storage, issuer_keys, req.host)
  if not chal then return nil, err, code end
  if chal.token ~= token or chal.type ~= "http-01"
    or chal.identifier:lower() ~= M.host_identifier(req.host) then
    return nil, "the stored challenge for " .. chal.identifier .. " has another token", "ENOENT"
  end
  return chal.key_authorization
end

--- The HTTP response for what M.answer said about req (ka, or why, code):
-- 200 with the key authorization, 405 for another method, 503 when storage
-- could not say (logged), else 404. `served` is called on a 200.
function M.http_reply(req, ka, why, code, served)
  if ka then
    if served then served() end
    return { status = 200, body = ka, headers = { ["Content-Type"] = "application/octet-stream" } }
  end
  if code == "method" then return { status = 405, body = "405 Method Not Allowed\n", headers = { Allow = "GET, HEAD" } } end
  if code ~= "ENOENT" and code ~= "invalid" then
    core.log("warn", "challenge_lookup_failed", { host = req.host, path = req.path, error = why, code = code })
    return { status = 503, body = "503 Service Unavailable\n" }
  end
  return { status = 404, body = "404 Not Found\n" }
end

--- A loop.serve handler answering challenge paths from storage; anything
-- else is 404. log(level, event, fields) is told what was served (default core.log).
function M.responder(storage, issuer_keys, log)
  issuer_list(issuer_keys)
  return function(req)
    local ka, why, code = M.answer(storage, issuer_keys, req)
    return M.http_reply(req, ka, why, code, function()
      local say = log or core.log
      say("info", "challenge_served", { identifier = M.host_identifier(req.host), challenge = "http-01",
        distributed = true })
    end)
  end
end

return M
