-- issuer: certmaint's internal CA (certmaint.issuer.internal); swap in certmaint.issuer.acme once ACME lands
--
-- nginx: certificates deployed as <dir>/<name>/fullchain.pem and privkey.pem
-- (atomically, key 0600), then `nginx -s reload` run without blocking the loop.
--   ssl_certificate     /etc/nginx/certmaint/example.com/fullchain.pem;
--   ssl_certificate_key /etc/nginx/certmaint/example.com/privkey.pem;
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
  on_renewed = certmaint.deploy.files { dir = DEPLOY_DIR, reload = RELOAD },
}
