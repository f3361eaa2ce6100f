-- issuer: certmaint's internal CA (certmaint.issuer.internal); swap in certmaint.issuer.acme once ACME lands
--
-- nginx: certificates deployed as <dir>/<name>/fullchain.pem and privkey.pem
-- (atomically, key 0600), then `nginx -s reload` run without blocking the loop.
--   ssl_certificate     /etc/nginx/certmaint/example.com/fullchain.pem;
--   ssl_certificate_key /etc/nginx/certmaint/example.com/privkey.pem;
-- Its OCSP staple, verified by certmaint, is written beside them as DER (staple = true,
-- the default) and nginx reloaded only when the staple's bytes changed:
--   ssl_stapling      on;
--   ssl_stapling_file /etc/nginx/certmaint/example.com/ocsp.der;
-- nginx refuses a configuration whose ssl_stapling_file is missing: a new certificate's
-- deploy removes the previous one's staple (never served with the wrong certificate)
-- until the OCSP pass writes the new one, so add the ssl_stapling_file line once the file
-- exists, or use `staple = false` and nginx's own `ssl_stapling on;` fetching.
local certmaint = require "certmaint"

local DEPLOY_DIR = os.getenv("CERTMAINT_NGINX_DIR") or "/etc/nginx/certmaint"
local RELOAD = os.getenv("CERTMAINT_RELOAD") or "nginx -s reload" -- split on spaces; no shell

return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") or "/var/lib/certmaint" },
  issuer = certmaint.issuer.internal { lifetime = "30d" },
  certificates = {
    { "example.com", "www.example.com" },
    "api.example.com",
  },
  on_renewed = certmaint.deploy.files { dir = DEPLOY_DIR, reload = RELOAD, staple = true },
}
