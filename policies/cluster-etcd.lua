-- issuer: ACME (certmaint.issuer.acme) with http-01 answered by any instance; storage: etcd shared by every instance
--
-- Several certmaint instances (one per load balancer node, say) sharing one
-- etcd: every certificate is obtained and renewed by ONE of them at a time
-- (the name's storage lock, a lease in etcd: an instance that dies frees its
-- locks when its lease expires), the others reload what it stored; OCSP
-- staples, CRLs and ARI windows are fetched by one and shared; one instance
-- cleans per clean_interval. http-01 challenges are kept in etcd too, so the
-- instance the load balancer sends the CA's validation request to answers it,
-- whichever instance placed the order. Run the same policy on every node
-- (README "Running a cluster").
--
-- Settings (environment):
--   CERTMAINT_ETCD_ENDPOINTS   etcd client URLs, comma-separated (default http://127.0.0.1:2379)
--   CERTMAINT_ETCD_PREFIX      key prefix in etcd (default /certmaint)
--   CERTMAINT_ETCD_USERNAME, CERTMAINT_ETCD_PASSWORD  etcd authentication (optional, together)
--   CERTMAINT_ETCD_CA_FILE     trust for etcd's TLS (https endpoints), optional
--   CERTMAINT_ETCD_CERT_FILE, CERTMAINT_ETCD_KEY_FILE  a TLS client certificate for etcd (optional)
--   CERTMAINT_LOCK_TTL         etcd lease of a lock: a dead instance's locks last this long (default 30s)
--   CERTMAINT_LOCK_WAIT        longest wait for a lock another instance holds (default 5m)
--   CERTMAINT_NAMES            the certificates: comma-separated, each one's names
--                              space-separated ("example.com www.example.com,api.example.com")
--   CERTMAINT_ACME_DIRECTORY   the CA (default Let's Encrypt)
--   CERTMAINT_EMAIL            ACME account e-mail
--   CERTMAINT_CA_BUNDLE        trust for the CA's own TLS (a test CA), optional
--   CERTMAINT_HTTP01_LISTEN    http-01 listener (default 0.0.0.0:80)
--   CERTMAINT_HTTP01_STANDBY   "1": keep the listener open all the time (the
--                              load balancer's health check sees it), else it
--                              opens while a challenge of this instance is pending
--   CERTMAINT_RENEW_CHECK_INTERVAL  how often the renew pass runs (default 10m)
--   CERTMAINT_DEPLOY_DIR       where this node's fullchain.pem + privkey.pem go (optional:
--                              unset, nothing is written outside etcd)
--   CERTMAINT_RELOAD           command run after a deploy (optional)
local certmaint = require "certmaint"

local env = os.getenv

local function list(text, sep)
  local out = {}
  for item in (text or ""):gmatch("[^" .. sep .. "]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end

local endpoints = list(env("CERTMAINT_ETCD_ENDPOINTS") or "http://127.0.0.1:2379", ",")

local certificates = {}
for _, cert in ipairs(list(env("CERTMAINT_NAMES") or "example.com www.example.com", ",")) do
  certificates[#certificates + 1] = list(cert, " ")
end

local deploy_dir = env("CERTMAINT_DEPLOY_DIR")

return certmaint.policy {
  storage = certmaint.storage.etcd {
    endpoints = endpoints,
    prefix = env("CERTMAINT_ETCD_PREFIX") or "/certmaint",
    username = env("CERTMAINT_ETCD_USERNAME"),
    password = env("CERTMAINT_ETCD_PASSWORD"),
    ca_file = env("CERTMAINT_ETCD_CA_FILE"),
    cert_file = env("CERTMAINT_ETCD_CERT_FILE"),
    key_file = env("CERTMAINT_ETCD_KEY_FILE"),
    lock_ttl = env("CERTMAINT_LOCK_TTL") or "30s",
  },
  issuer = certmaint.issuer.acme {
    directory = env("CERTMAINT_ACME_DIRECTORY") or "https://acme-v02.api.letsencrypt.org/directory",
    email = env("CERTMAINT_EMAIL"),
    ca_bundle = env("CERTMAINT_CA_BUNDLE"),
    challenges = { http01 = {
      listen = env("CERTMAINT_HTTP01_LISTEN") or "0.0.0.0:80",
      standby = env("CERTMAINT_HTTP01_STANDBY") == "1",
      distributed = true, -- tokens in etcd: any instance answers any instance's order
    } },
  },
  certificates = certificates,
  renew_check_interval = env("CERTMAINT_RENEW_CHECK_INTERVAL") or "10m",
  lock_wait = env("CERTMAINT_LOCK_WAIT") or "5m",

  -- every node deploys to its own disk, also when another node renewed
  -- (cert.event == "reloaded"): the new files reach every server
  on_renewed = deploy_dir and certmaint.deploy.files { dir = deploy_dir, reload = env("CERTMAINT_RELOAD") } or nil,
}
