-- The README's "Testing a policy with busted" example must keep working:
-- extract it and run its `it` blocks here.
local root = os.getenv("CERTMAINT_SOURCE_DIR") or "."

local f = assert(io.open(root .. "/README.md", "r"))
local readme = f:read("a")
f:close()
local example = readme:match('```lua\n(local certmaint = require "certmaint"\nlocal testing.-)```')
assert(example, "README.md lost its busted example")

local chunk = assert(load(example, "@README.md (busted example)", "t",
  setmetatable({}, { __index = _ENV })))
chunk()
