--- certmaint.issuer: where certificates come from.
--
--   issuer = certmaint.issuer.internal { lifetime = "7d" }
--
-- An issuer is an object with
--   issuer:issue(req, ctx) -> { chain_pem = "..." } | nil, err, code
--     req = { names = {...}, csr_pem = "...", key_type = "p256" }
--     ctx = { storage = backend, now = unix seconds }
--     err may be a table { message = ..., final = true } for errors not worth retrying
--   issuer:storage_key() -> the folder under certificates/ ("local", "127.0.0.1-14000-dir")
--   issuer:describe() -> text for logs
local M = {}

function M.internal(opts)
  return require("certmaint.issuer.internal").new(opts)
end

return M
