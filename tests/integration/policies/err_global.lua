local certmaint = require "certmaint"
return certmaint.policy {
  certificates = { hostname },
}
