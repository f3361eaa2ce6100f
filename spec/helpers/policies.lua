-- Loading a shipped policy in a spec: through the real sandbox, with the
-- environment variables the spec chooses, and memory storage swapped in.
local sandbox = require "certmaint.sandbox"

local M = {}

M.ROOT = os.getenv("CERTMAINT_SOURCE_DIR") or "."

--- Load policies/<name>.lua with env (a table of variables); raises on error.
function M.load(name, env)
  env = env or {}
  local path = M.ROOT .. "/policies/" .. name .. ".lua"
  local policy, err = sandbox.load_policy(path, { getenv = function(k) return env[k] end })
  assert(policy, err)
  return policy
end

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
