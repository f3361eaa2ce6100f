-- issuer: certmaint's internal CA (certmaint.issuer.internal); swap in certmaint.issuer.acme once ACME lands
--
-- HAProxy: one PEM per certificate, chain then key (0600), in a directory HAProxy
-- loads with `crt /etc/haproxy/certmaint/`; then a reload run without blocking.
local certmaint = require "certmaint"

local DEPLOY_DIR = os.getenv("CERTMAINT_HAPROXY_DIR") or "/etc/haproxy/certmaint"
local RELOAD = os.getenv("CERTMAINT_RELOAD") or "systemctl reload haproxy" -- split on spaces; no shell

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") or "/var/lib/certmaint" },
  issuer = certmaint.issuer.internal { lifetime = "30d" },
  certificates = { "example.com", "*.apps.example.com" },
  on_renewed = certmaint.deploy.files { dir = DEPLOY_DIR, layout = "haproxy", reload = RELOAD },
}
