--- fuzz_acme: what an ACME CA answers (RFC 8555), through the real flows of
-- lua/certmaint/acme/ (client, account, order) with the CA's answers from the
-- input (fuzz_util's script). The first byte picks the document the script
-- starts with:
--   0 directory      client:directory(), then client:nonce()
--   1 account        account.get (newAccount's answer, and what follows)
--   2 order          order.obtain from newOrder's answer on: authorizations,
--                    challenges, polling, finalize, the chain download
--   3 authorization  order.obtain with a canned pending order: the script
--                    starts at its authorization
--   4 problem        client:post answered by error statuses (problem
--                    documents, badNonce retries, Retry-After)
-- The directory and newNonce are canned except in kind 0. Every flow must end
-- in a result or nil, err, code.
local core = require "certmaint.core"
local util = require "fuzz_util"
local client_mod = require "certmaint.acme.client"
local account = require "certmaint.acme.account"
local order = require "certmaint.acme.order"
local memory = require "certmaint.storage.memory"
local keys = require "certmaint.keys"

local BASE = "https://ca.test"
local DIRECTORY_URL = BASE .. "/dir"
local DIRECTORY = {
  status = 200, headers = { ["content-type"] = "application/json" },
  body = '{"newNonce":"' .. BASE .. '/nonce","newAccount":"' .. BASE .. '/acct","newOrder":"'
    .. BASE .. '/order","revokeCert":"' .. BASE .. '/revoke","renewalInfo":"' .. BASE .. '/ari"}',
}
local NONCE = { status = 200, headers = { ["replay-nonce"] = "fuzzNonce" }, body = "" }
local JSON = { ["content-type"] = "application/json" }

-- polls do not wait: one input is a few milliseconds
order.FIRST_POLL = 0
order.MAX_POLL_INTERVAL = 0

-- the key of the fixture chain's leaf, so a flow can end with a certificate
local function fixture(name)
  local f = assert(io.open(FUZZ_SOURCE .. "/tests/fixtures/x509/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end
local key_pem = fixture("ok_leaf.key")
local csr_pem = assert(core.csr_create(key_pem, { "example.com", "*.example.com" }))
local account_key = assert(core.key_generate("p256"))
local account_signer = assert(core.jws_signer(account_key))

local function canned(with_directory)
  return function(req)
    if with_directory and req.url == DIRECTORY_URL then return DIRECTORY end
    if req.method == "HEAD" then return NONCE end
  end
end

local function new_client(chunks, defaults, with_directory)
  local c = client_mod.new { directory = DIRECTORY_URL }
  local transport = util.transport(chunks, defaults, canned(with_directory))
  c.transport = function(_, req) return transport(req) end
  return c
end

-- a solver that presents every challenge at once
local solver = {
  present = function() return true end,
  cleanup = function() return true end,
}
local SOLVERS = {
  { kind = "http01", type = "http-01", solver = solver },
  { kind = "dns01", type = "dns-01", solver = solver },
}

local function session(c)
  return {
    client = c, account = { url = BASE .. "/acct/1", signer = account_signer }, solvers = SOLVERS,
    storage = memory.new(), issuer_key = keys.issuer_key(DIRECTORY_URL),
    poll_timeout = 0.05, max_poll_interval = 0,
  }
end

local function check_obtained(res, err, code)
  if util.VERBOSE then
    io.stderr:write("  obtain: ", tostring(res and res.chain_pem and "chain" or nil), " ",
      tostring(type(err) == "table" and err.message or err), " ", tostring(code), "\n")
  end
  util.check_failure("order.obtain", res, err, code)
  -- what obtain promises (the engine parses the whole chain before storing it)
  if res and (type(res.chain_pem) ~= "string" or not core.key_matches(res.chain_pem, res.key_pem or key_pem)) then
    error("fuzz: order.obtain returned a chain whose leaf is not for the key (property broken)", 0)
  end
end

local kinds = {
  [0] = function(chunks)
    local c = new_client(chunks, { headers = JSON }, false)
    local dir, err, code = c:directory()
    util.check_failure("client:directory", dir, err, code)
    if dir then
      for _, k in ipairs { "newNonce", "newAccount", "newOrder" } do
        if type(dir[k]) ~= "string" then error("fuzz: a directory without " .. k .. " (property broken)", 0) end
      end
      util.check_failure("client:nonce", c:nonce())
    end
  end,
  [1] = function(chunks)
    local c = new_client(chunks, { status = 201, headers = { ["content-type"] = "application/json",
      location = BASE .. "/acct/1" } }, true)
    local acct, err, code = account.get(c, memory.new(), { email = "fuzz@example.com" })
    util.check_failure("account.get", acct, err, code)
    if acct and type(acct.url) ~= "string" then error("fuzz: an account without a URL (property broken)", 0) end
  end,
  [2] = function(chunks)
    local c = new_client(chunks, { status = 200, headers = { ["content-type"] = "application/json",
      location = BASE .. "/order/1" } }, true)
    check_obtained(order.obtain(session(c), { names = { "example.com", "*.example.com" }, csr_pem = csr_pem,
      key_pem = key_pem, preferred_chain = "Fuzz Root" }))
  end,
  [3] = function(chunks)
    table.insert(chunks, 1, "HTTP 201\ncontent-type: application/json\nlocation: " .. BASE .. "/order/1\n\n"
      .. '{"status":"pending","identifiers":[{"type":"dns","value":"example.com"}],"authorizations":["'
      .. BASE .. '/authz/1","' .. BASE .. '/authz/2"],"finalize":"' .. BASE .. '/finalize/1"}')
    local c = new_client(chunks, { status = 200, headers = JSON }, true)
    check_obtained(order.obtain(session(c), { names = { "example.com" }, csr_pem = csr_pem, key_pem = key_pem }))
  end,
  [4] = function(chunks)
    local c = new_client(chunks, { status = 400, headers = { ["content-type"] = "application/problem+json" } }, true)
    local resp, err, code = c:post(BASE .. "/order/1", "{}", account_signer, BASE .. "/acct/1")
    util.check_failure("client:post", resp, err, code)
    if not resp and type(err) == "table" and type(err.message) ~= "string" then
      error("fuzz: a failure without a message (property broken)", 0)
    end
    util.check_failure("client:get", c:get(BASE .. "/ari/x"))
  end,
}

return function(data)
  if #data == 0 then return end
  local kind = kinds[data:byte(1) % 5]
  util.task(kind, util.split(data:sub(2)))
end
