-- issuer: certmaint's internal CA (certmaint.issuer.internal); swap in certmaint.issuer.acme once ACME lands
--
-- HAProxy: one PEM per certificate, chain then key (0600), in a directory HAProxy
-- loads with `crt /etc/haproxy/certmaint/`; then a reload run without blocking.
--   bind :443 ssl crt /etc/haproxy/certmaint/
-- Each certificate's OCSP staple, verified by certmaint, is written beside it as DER
-- (staple = true, the default): /etc/haproxy/certmaint/example.com.pem.ocsp, which
-- HAProxy loads with the crt at (re)load. The reload runs only when a staple's bytes
-- changed; a new certificate's deploy removes the previous one's staple file.
local certmaint = require "certmaint"

local DEPLOY_DIR = os.getenv("CERTMAINT_HAPROXY_DIR") or "/etc/haproxy/certmaint"
local RELOAD = os.getenv("CERTMAINT_RELOAD") or "systemctl reload haproxy" -- split on spaces; no shell

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") or "/var/lib/certmaint" },
  issuer = certmaint.issuer.internal { lifetime = "30d" },
  certificates = { "example.com", "*.apps.example.com" },
  on_renewed = certmaint.deploy.files { dir = DEPLOY_DIR, layout = "haproxy", reload = RELOAD, staple = true },
}
