--- fuzz_names: names and the storage keys made of them on the Lua side
-- (lua/certmaint/keys.lua over core.name_*, and the challenge server's Host
-- header reading). The first byte picks the reader:
--   0 keys.normalize and keys.name_key (a certificate name), and the site keys
--   1 keys.safe (certmagic's KeyBuilder.Safe)
--   2 keys.issuer_key (a directory URL or an issuer name)
--   3 keys.acme_account (an account e-mail)
--   4 tokens.host_identifier and keys.challenge_token (a Host header)
--   5 tokens.valid_token and keys.lock_name
-- A key is one or more path components, never "." or "..", and never empty.
local keys = require "certmaint.keys"
local tokens = require "certmaint.acme.challenges.tokens"

local function broken(msg) error("fuzz: " .. msg .. " (property broken)", 0) end

local function check_key(k, what, allow_slash)
  if type(k) ~= "string" or k == "" then broken(what .. " gave an empty key") end
  for part in (k .. "/"):gmatch("([^/]*)/") do
    if part == "" or part == "." or part == ".." then broken(what .. " gave the key " .. string.format("%q", k)) end
    if not allow_slash and part ~= k then broken(what .. " gave a key with '/'") end
  end
  if k:find("%z") then broken(what .. " gave a key with NUL") end
end

local kinds = {
  [0] = function(s)
    local norm, kind = keys.normalize(s)
    if not norm then return end
    if type(kind) ~= "string" then broken("normalize kind") end
    local ok, key = pcall(keys.name_key, norm)
    if ok then
      check_key(key, "name_key")
      check_key(keys.cert("acme-v02.api.letsencrypt.org-directory", norm), "cert", true)
      check_key(keys.lock_name(norm), "lock_name")
    elseif not tostring(key):find("^keys: ") then
      broken("name_key's error " .. tostring(key))
    end
  end,
  [1] = function(s)
    local k = keys.safe(s)
    if keys.safe(k) ~= k then broken("safe is not idempotent on " .. string.format("%q", s)) end
    if k == "." or k == ".." or k:find("[/\\%z]") then broken("safe gave " .. string.format("%q", k)) end
  end,
  [2] = function(s)
    local k = keys.issuer_key(s)
    if k:find("[/\\%z]") or k == "." or k == ".." then broken("issuer_key gave " .. string.format("%q", k)) end
  end,
  [3] = function(s)
    local ok, files = pcall(keys.acme_account, "https://ca.test/dir", s)
    if ok then
      check_key(files.registration, "acme_account", true)
      check_key(files.private_key, "acme_account", true)
    elseif not tostring(files):find("keys%.") then
      broken("acme_account's error " .. tostring(files))
    end
  end,
  [4] = function(s)
    local id = tokens.host_identifier(s)
    if id == nil then return end
    if type(id) ~= "string" or id == "" then broken("host_identifier") end
    local ok, key = pcall(keys.challenge_token, "https://ca.test/dir", id)
    if ok then check_key(key, "challenge_token", true) end
  end,
  [5] = function(s)
    if tokens.valid_token(s) and s:find("[/%.%%]") then broken("valid_token took " .. string.format("%q", s)) end
  end,
}

return function(data)
  if #data == 0 then return end
  kinds[data:byte(1) % 6](data:sub(2))
end
