-- issuer: certmaint's internal CA with a CRL distribution point
-- ($CERTMAINT_CRL_URL, served on 127.0.0.1 by tests/integration/ocsp.bash)
-- and no OCSP responder, so the CRL is the revocation check; two certificates.
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.internal { lifetime = "1h", crl_url = os.getenv("CERTMAINT_CRL_URL") },
  certificates = { "a.crl.test", "b.crl.test" },
  ocsp = { timeout = "3s" },
}
