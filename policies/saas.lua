-- issuer: certmaint's internal CA (certmaint.issuer.internal); swap in certmaint.issuer.acme once ACME lands
--
-- SaaS: customers' domains are read at run time from a file (one name a line,
-- '#' comments), re-read on every renew tick: new names are managed, removed
-- names are dropped. Names outside the file are refused by allow_name, as
-- Caddy's `ask` endpoint would. Runtime names are on-demand: one whose renewal
-- fails leaves the cache instead of being served stale.
local certmaint = require "certmaint"

local DOMAINS = os.getenv("CERTMAINT_DOMAINS") or "/etc/certmaint/domains.txt"

local function read_domains()
  local set, list = {}, {}
  local f = io.open(DOMAINS, "r")
  if not f then return set, list end
  for line in f:lines() do
    local name = line:gsub("#.*", ""):match("^%s*(.-)%s*$")
    if name ~= "" and not set[name:lower()] then
      set[name:lower()] = true
      list[#list + 1] = name:lower()
    end
  end
  f:close()
  return set, list
end

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") or "/var/lib/certmaint" },
  issuer = certmaint.issuer.internal { lifetime = "30d" },
  certificates = { "app.example.com" }, -- the service's own name
  renew_check_interval = "1m",

  allow_name = function(name)
    local set = read_domains()
    return set[name] == true
  end,

  on_tick = function(tick)
    if tick.kind ~= "renew" then return end
    local set, list = read_domains()
    for _, name in ipairs(list) do tick.manage(name) end
    for _, name in ipairs(tick.managed()) do
      if name ~= "app.example.com" and not set[name] then tick.unmanage(name) end
    end
  end,
}
