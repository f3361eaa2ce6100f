local certmaint = require "certmaint"
return certmaint.policy {
  certificates = { "example.test" },
  renew_windwo = 0.3,
}
