-- issuer: internal CA; one certificate deployed nginx-style to $CERTMAINT_DEPLOY_DIR
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.internal { lifetime = os.getenv("CERTMAINT_LIFETIME") or "1h" },
  certificates = { "deploy.test" },
  renew_check_interval = os.getenv("CERTMAINT_RENEW_CHECK") or "10m",
  on_renewed = certmaint.deploy.files {
    dir = os.getenv("CERTMAINT_DEPLOY_DIR"),
    reload = { "sh", "-c", "echo reloaded >> " .. os.getenv("CERTMAINT_DEPLOY_DIR") .. ".reloads" },
  },
}
