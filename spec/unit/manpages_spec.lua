-- The man pages are written by hand: they must keep naming every command the
-- CLI has and every field certmaint.policy accepts.
local policy = require "certmaint.policy"

local root = (os.getenv("CERTMAINT_SOURCE_DIR") or ".")
local function read(path)
  local f = assert(io.open(root .. "/" .. path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

describe("man/certmaint.1", function()
  local page = read("man/certmaint.1")

  it("has an entry for every command of lua/certmaint/cli.lua", function()
    local cli = read("lua/certmaint/cli.lua")
    local names = { "test", "help" } -- dispatched before the commands table
    for name in cli:gmatch("\nfunction commands%.([%w_]+)%(") do names[#names + 1] = name end
    assert.is_true(#names >= 9, "found only " .. #names .. " commands in cli.lua")
    for _, name in ipairs(names) do
      -- a .TP tag line starting with the command in bold
      assert.is_truthy(page:find("\n%.BI? " .. name .. "[ \n]") or page:find("\n\\fB" .. name .. "\\fR", 1, true),
        "certmaint.1 has no entry for the command " .. name)
    end
  end)

  it("documents every global option", function()
    for _, opt in ipairs { "log-format", "log-level", "data-dir", "help", "version" } do
      local roff = "\\-\\-" .. opt:gsub("%-", "\\-") -- "-" is "\-" in roff
      assert.is_truthy(page:find(roff, 1, true), "certmaint.1 does not name --" .. opt)
    end
  end)
end)

describe("man/certmaint-policy.5", function()
  local page = read("man/certmaint-policy.5")

  it("has an entry for every policy field, and names every field of the record fields", function()
    local n = 0
    for name, field in pairs(policy.FIELDS) do
      n = n + 1
      local entry = page:find("\n%.B " .. name .. "\n") or page:find("\n%.BI " .. name .. "%(")
      assert.is_truthy(entry, "certmaint-policy.5 has no entry for the field " .. name)
      for sub in pairs(field.fields or {}) do
        assert.is_truthy(page:find("%f[%w_]" .. sub .. "%f[^%w_]"),
          "certmaint-policy.5 does not name " .. name .. "." .. sub)
      end
    end
    assert.is_true(n >= 20)
  end)
end)
