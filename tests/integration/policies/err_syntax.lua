local certmaint = require "certmaint"
return certmaint.policy {
  certificates = { "example.test" }
  renew_check_interval = "10m",
}
