-- issuer: Pebble with ocspResponderURL, `openssl ocsp` answering for it
-- (tests/integration/ocsp.bash), http-01 on certmaint's own listener; three
-- certificates, reuse_key on, deployed with their staples to
-- $CERTMAINT_DEPLOY_DIR in layout $CERTMAINT_DEPLOY_LAYOUT (haproxy | split);
-- $CERTMAINT_STAPLE_FILE, when set, a PEM chain certmaint does not manage,
-- stapled only (its staple written beside it as <path>.ocsp).
local certmaint = require "certmaint"
local deploy_dir = os.getenv("CERTMAINT_DEPLOY_DIR")
local staple_file = os.getenv("CERTMAINT_STAPLE_FILE")
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.acme {
    directory = os.getenv("PEBBLE_DIR_URL"),
    ca_bundle = os.getenv("PEBBLE_CA_BUNDLE"),
    email = "ops@example.test",
    challenges = { http01 = { listen = "127.0.0.1:" .. os.getenv("PEBBLE_HTTP_PORT") } },
  },
  certificates = { "a.ocsp.test", { "b.ocsp.test", "www.b.ocsp.test" }, "c.ocsp.test" },
  reuse_key = true,
  ocsp_check_interval = os.getenv("CERTMAINT_OCSP_CHECK") or "1s",
  ocsp = {
    timeout = os.getenv("CERTMAINT_OCSP_TIMEOUT") or "3s",
    max_response_size = 65536,
    staple_files = staple_file and { staple_file } or nil,
  },
  on_renewed = certmaint.deploy.files {
    dir = deploy_dir,
    layout = os.getenv("CERTMAINT_DEPLOY_LAYOUT") or "haproxy",
    reload = { "sh", "-c", "echo reloaded >> " .. deploy_dir .. ".reloads" },
  },
}
