--- certmaint.storage: the storage backends a policy can name.
--
--   storage = certmaint.storage.file { root = "/var/lib/certmaint" }
--   storage = certmaint.storage.memory()
local M = {}

function M.file(opts)
  return require("certmaint.storage.file").new(opts)
end

function M.memory(opts)
  return require("certmaint.storage.memory").new(opts)
end

--- The methods every backend has (the contract spec checks each).
M.METHODS = { "load", "store", "delete", "exists", "list", "stat", "lock", "unlock" }

return M
