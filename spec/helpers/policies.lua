-- What the specs of shipped policies share: where the sources are, a temp
-- folder, reading a file. (They load a policy with testing.load_policy, as an
-- operator's spec does.)
local M = {}

M.ROOT = os.getenv("CERTMAINT_SOURCE_DIR") or "."

function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. p))
  return p
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

return M
