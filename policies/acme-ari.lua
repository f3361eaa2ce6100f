-- issuer: ACME, Let's Encrypt first and a second CA when it fails for a name (certmaint.issuer.acme, an issuer list), renewing by the CAs' ARI windows
--
-- Public certificates from two ACME CAs: each name is ordered from the first
-- CA; when that fails for it (a rate limit, an outage, a refused name) the
-- second is asked at once, and the certificate is kept in the folder of the
-- CA that issued it (found there at every start, whatever the list says
-- later). Renewals follow each CA's ACME Renewal Information (RFC 9773): the
-- suggested window (a window in the past means "replace it now", as after a
-- revocation), refreshed at the CA's Retry-After; without a window, the last
-- third of the lifetime. A wildcard name is validated with dns-01 through a
-- command the operator provides; other names with http-01 on port 80.
--
-- Settings (environment):
--   CERTMAINT_DATA             storage root (default /var/lib/certmaint)
--   CERTMAINT_EMAIL            ACME account e-mail
--   CERTMAINT_ACME_DIRECTORY   first CA (default Let's Encrypt)
--   CERTMAINT_ACME_FALLBACK    second CA (default ZeroSSL, which needs EAB:
--   CERTMAINT_EAB_KID, CERTMAINT_EAB_HMAC_KEY  its External Account Binding)
--   CERTMAINT_CA_BUNDLE        trust for the CAs' own TLS (a test CA), optional
--   CERTMAINT_HTTP01_LISTEN    http-01 listener (default 0.0.0.0:80)
--   CERTMAINT_DNS_HOOK         command run as `HOOK present|cleanup NAME VALUE`
--                              to add or remove the dns-01 TXT record
--   CERTMAINT_DEPLOY_DIR       where fullchain.pem + privkey.pem go (default /etc/certmaint/live)
--   CERTMAINT_RELOAD           command run after a deploy (optional)
local certmaint = require "certmaint"

local env = os.getenv
local DNS_HOOK = env("CERTMAINT_DNS_HOOK") or "/usr/local/bin/certmaint-dns-hook"

-- dns-01 through the operator's command: a failure names the record and says why
local function dns_hook(action)
  return function(name, value)
    local r, err = certmaint.exec({ DNS_HOOK, action, name, value }, { timeout = 60 })
    if not r then return nil, DNS_HOOK .. " " .. action .. " " .. name .. ": " .. tostring(err) end
    if r.status ~= 0 then
      return nil, string.format("%s %s %s exited %s: %s", DNS_HOOK, action, name, tostring(r.status),
        (r.stderr or ""):sub(1, 200))
    end
    return true
  end
end

local challenges = {
  http01 = { listen = env("CERTMAINT_HTTP01_LISTEN") or "0.0.0.0:80" },
  dns01 = { present = dns_hook("present"), cleanup = dns_hook("cleanup"), propagation = "20s" },
}

local eab
if env("CERTMAINT_EAB_KID") and env("CERTMAINT_EAB_HMAC_KEY") then
  eab = { kid = env("CERTMAINT_EAB_KID"), hmac_key = env("CERTMAINT_EAB_HMAC_KEY") }
end

local first = certmaint.issuer.acme {
  directory = env("CERTMAINT_ACME_DIRECTORY") or "https://acme-v02.api.letsencrypt.org/directory",
  email = env("CERTMAINT_EMAIL"), ca_bundle = env("CERTMAINT_CA_BUNDLE"), challenges = challenges,
}
local second = certmaint.issuer.acme {
  directory = env("CERTMAINT_ACME_FALLBACK") or "https://acme.zerossl.com/v2/DV90",
  email = env("CERTMAINT_EMAIL"), ca_bundle = env("CERTMAINT_CA_BUNDLE"), challenges = challenges, eab = eab,
}

local reload = env("CERTMAINT_RELOAD")

return certmaint.policy {
  storage = certmaint.storage.file { root = env("CERTMAINT_DATA") or "/var/lib/certmaint" },
  issuer = { first, second },  -- in order: the second only when the first fails for a name
  issuer_policy = "in_order",
  certificates = {
    { "example.com", "www.example.com" },
    "*.example.com",           -- dns-01 only
  },
  renew_check_interval = "1h", -- also how often due ARI windows are fetched again

  on_renewed = certmaint.deploy.files {
    dir = env("CERTMAINT_DEPLOY_DIR") or "/etc/certmaint/live", reload = reload,
  },

  -- every CA failed for a name (each one's answer is in the message); the
  -- renewal is retried on the back-off, or at the CAs' Retry-After
  on_error = function(err)
    certmaint.log("warn", "acme_ari_renew_failed", { name = err.name, error = err.message })
  end,
}
