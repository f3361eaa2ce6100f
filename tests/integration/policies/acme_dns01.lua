-- issuer: Pebble over dns-01: the policy's present/cleanup hooks drive
-- pebble-challtestsrv's management API (present through certmaint.loop.http,
-- cleanup through certmaint.exec running curl), one certificate for a
-- wildcard and its base name (two TXT values on one record at once).
-- FAIL_NAME, when set, is a name whose present hook reports a failure.
local certmaint = require "certmaint"
local mgmt = os.getenv("CHALLTEST_MGMT")
local fail_name = os.getenv("FAIL_NAME")

-- challtestsrv's clear-txt removes every value of a record: keep what is
-- live here, so a cleanup removes only its own value
local live = {}

local function set_txt(name, value)
  local r, err = certmaint.loop.http { url = mgmt .. "/set-txt", method = "POST", timeout = 10,
    body = string.format('{"host":"%s.","value":"%s"}', name, value) }
  if not r then return nil, err end
  if r.status ~= 200 then return nil, "set-txt answered " .. r.status end
  return true
end

local function present(name, value, info)
  if info.identifier == fail_name then return nil, "the DNS provider refused " .. name end
  live[name] = live[name] or {}
  live[name][value] = true
  return set_txt(name, value)
end

local function cleanup(name, value)
  if live[name] then live[name][value] = nil end
  local r, err = certmaint.exec({ "curl", "-sf", "-o", "/dev/null", "-d",
    string.format('{"host":"%s."}', name), mgmt .. "/clear-txt" }, { timeout = 10 })
  if not r then return nil, err end
  if r.status ~= 0 then return nil, "curl clear-txt exited " .. tostring(r.status) end
  for v in pairs(live[name] or {}) do
    local ok, serr = set_txt(name, v)
    if not ok then return nil, serr end
  end
  return true
end

local certificates = { { "*.wild.example.test", "wild.example.test" }, "dns.example.test" }
if fail_name then certificates = { fail_name } end

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { dns01 = { present = present, cleanup = cleanup } },
  },
  certificates = certificates,
  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
}
