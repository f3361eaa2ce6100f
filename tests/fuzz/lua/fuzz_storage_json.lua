--- fuzz_storage_json: the JSON certmaint reads back from storage (which Caddy,
-- another instance, a full disk or an operator may have written), through
-- the real readers over a memory storage holding the input. The first byte
-- picks the document:
--   0 lock file            storage.common.decode_lock
--   1 ACME account         acme.account.get (acme/<ca>/users/<email>/<user>.json)
--   2 open ACME order      acme.order.obtain's resume (certmaint/acme/orders/...)
--   3 challenge token      acme.challenges.tokens decode, answer, cleanup
--   4 certificate metadata certmagic's <name>.json: engine ari_load_stored
--                          (issuer_data.renewal_info) and reusable_key
--                          (certmaint.key_type)
--   5 deploy record        engine deploy_record
--   6 retry state          engine load_states
-- The CA is never reached: requests fail as a refused connection does.
local core = require "certmaint.core"
local util = require "fuzz_util"
local common = require "certmaint.storage.common"
local memory = require "certmaint.storage.memory"
local keys = require "certmaint.keys"
local certset = require "certmaint.certset"
local client_mod = require "certmaint.acme.client"
local account = require "certmaint.acme.account"
local order = require "certmaint.acme.order"
local tokens = require "certmaint.acme.challenges.tokens"

local DIRECTORY_URL = "https://ca.test/dir"
local ISSUER = keys.issuer_key(DIRECTORY_URL)
local NAME = "example.com"
local TOKEN = "tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"

local key_pem = assert(core.key_generate("p256"))
local signer = assert(core.jws_signer(key_pem))
local csr_pem = assert(core.csr_create(key_pem, { NAME }))

-- the engine's methods (engine/init.lua composes them the same way) on a
-- small engine: one entry, a memory storage
local Engine = {}
Engine.__index = Engine
for _, part in ipairs { "ari", "deploy", "retry", "renew", "revocation" } do
  for name, fn in pairs(require("certmaint.engine." .. part)) do Engine[name] = fn end
end
function Engine:paths(primary) return certset.paths(ISSUER, primary) end

local function engine(storage)
  local e = { primary = NAME, names = { NAME }, id = "fuzz-id", key_type = "p256", issuer_key = ISSUER }
  return setmetatable({ storage = storage, ari = {}, deploy_records = {}, order = { NAME },
    entries = { [NAME] = e }, issuer_key = ISSUER }, Engine), e
end

local function no_ca()
  local c = client_mod.new { directory = DIRECTORY_URL }
  c.transport = function(_, req) return nil, tostring(req.url) .. ": fuzz: connection refused", "connect" end
  return c
end

local function stored(key, text)
  local s = memory.new()
  assert(s:store(key, text))
  return s
end

local kinds = {
  [0] = function(text)
    local rec = common.decode_lock(text)
    if rec ~= nil and (type(rec.created) ~= "number" or type(rec.updated) ~= "number"
        or type(rec.owner) ~= "string") then
      error("fuzz: decode_lock gave a record without times or owner (property broken)", 0)
    end
    if rec then common.is_stale(rec.updated, core.now(), 10) end
  end,
  [1] = function(text)
    local files = keys.acme_account(DIRECTORY_URL, "fuzz@example.com")
    local s = stored(files.registration, text)
    assert(s:store(files.private_key, key_pem))
    local acct, err, code = account.get(no_ca(), s, { email = "fuzz@example.com" })
    util.check_failure("account.get", acct, err, code)
  end,
  [2] = function(text)
    local s = stored(keys.acme_order(ISSUER, NAME), text)
    local sess = { client = no_ca(), account = { url = "https://ca.test/acct/1", signer = signer }, solvers = {},
      storage = s, issuer_key = ISSUER, poll_timeout = 0.05 }
    util.check_failure("order.obtain", order.obtain(sess, { names = { NAME }, csr_pem = csr_pem, key_pem = key_pem }))
  end,
  [3] = function(text)
    local chal, err, code = tokens.decode(text, "fuzz")
    util.check_failure("tokens.decode", chal, err, code)
    local s = stored(keys.challenge_token(ISSUER, NAME), text)
    for _, host in ipairs { NAME, "EXAMPLE.COM.:80", "[::1]:80" } do
      local ka, why, c2 = tokens.answer(s, { ISSUER }, { method = "GET", path = tokens.PATH_PREFIX .. TOKEN,
        host = host })
      util.check_failure("tokens.answer", ka, why, c2)
      if ka and type(ka) ~= "string" then error("fuzz: tokens.answer gave a non-string (property broken)", 0) end
    end
    util.check_failure("tokens.cleanup", tokens.cleanup(s, ISSUER, { identifier = NAME, token = TOKEN,
      type = "http-01", key_authorization = TOKEN .. ".x" }))
  end,
  [4] = function(text)
    local set = certset.paths(ISSUER, NAME)
    local s = stored(set.meta, text)
    assert(s:store(set.key, key_pem))
    local self, e = engine(s)
    self:ari_load_stored({ e })
    local rec = self.ari[e.id]
    if rec and (type(rec.start) ~= "number" or type(rec["end"]) ~= "number" or rec["end"] < rec.start) then
      error("fuzz: a stored renewal window out of order (property broken)", 0)
    end
    self:reusable_key(e)
  end,
  [5] = function(text)
    local s = stored(keys.deploy(NAME), text)
    local self = engine(s)
    local rec = self:deploy_record(NAME)
    if type(rec) ~= "table" or type(rec.targets) ~= "table" then
      error("fuzz: deploy_record without targets (property broken)", 0)
    end
  end,
  [6] = function(text)
    local self, e = engine(nil)
    self.storage = stored(self:state_key(e), text)
    local states = self:load_states()
    if type(states) ~= "table" then error("fuzz: load_states gave no table (property broken)", 0) end
  end,
}

return function(data)
  if #data == 0 then return end
  util.task(kinds[data:byte(1) % 7], data:sub(2))
end
