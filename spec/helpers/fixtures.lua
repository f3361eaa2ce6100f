-- The bytes of a file under tests/fixtures/<folder>/ (each folder's README
-- says what its files must give); fails the spec when it cannot be read.
local M = {}

function M.read(folder, name)
  local f = assert(io.open("tests/fixtures/" .. folder .. "/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- A reader for one folder: local read = fixtures.reader("ocsp").
function M.reader(folder)
  return function(name) return M.read(folder, name) end
end

return M
