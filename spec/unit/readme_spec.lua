-- The README's "Testing a policy with busted" example must keep working:
-- extract it and run its `it` blocks here.
local root = os.getenv("CERTMAINT_SOURCE_DIR") or "."

local f = assert(io.open(root .. "/README.md", "r"))
local readme = f:read("a")
f:close()
local example = readme:match('```lua\n(local testing = require "certmaint.testing"\n.-)```')
assert(example, "README.md lost its busted example")

local chunk = assert(load(example, "@README.md (busted example)", "t",
  setmetatable({}, { __index = _ENV })))
chunk()

-- The README lists exactly what a policy's environment holds: compare that
-- list with the environment certmaint.sandbox really builds.
describe("README's list of a policy's environment", function()
  local sandbox = require "certmaint.sandbox"
  local section = readme:match("<!%-%- policy environment:.-%-%->\n(.-)\n\n")
  assert(section, "README.md lost its list of a policy's environment")
  local lines = {}
  for line in section:gmatch("[^\n]+") do
    local what, rest = line:match("^%- (.-): (.*)$")
    assert(what, "not a list item: " .. line)
    local names = {}
    for name in rest:gsub("%b()", ""):gmatch("`([^`]+)`") do names[#names + 1] = name end
    table.sort(names)
    lines[what] = names
  end
  local env = sandbox.environment("/nonexistent/policy.lua")

  local function sorted_keys(t, keep)
    local out = {}
    for k, v in pairs(t) do if keep(k, v) then out[#out + 1] = k end end
    table.sort(out)
    return out
  end
  local function whole(k, v)
    if type(v) ~= "table" or k == "_G" or type(_G[k]) ~= "table" then return false end
    for name, fn in pairs(_G[k]) do if rawget(v, name) ~= fn then return false end end
    for name in pairs(v) do if _G[k][name] == nil then return false end end
    return true
  end

  it("globals", function()
    assert.same(sorted_keys(env, function(k, v) return type(v) ~= "table" or k == "_G" end), lines["globals"])
  end)

  it("whole libraries, as copies", function()
    local libs = lines["whole libraries, as copies (changing one changes nothing outside the policy)"]
    assert.same(sorted_keys(env, whole), libs)
    for _, k in ipairs(libs) do assert.are_not.equal(_G[k], env[k], k) end
  end)

  -- every function of the library, some replaced: the README names those
  local function replaced(lib)
    local names = {}
    for name in pairs(_G[lib]) do assert.is_not_nil(rawget(env[lib], name), lib .. "." .. name .. " is missing") end
    for name, fn in pairs(env[lib]) do
      assert.is_not_nil(_G[lib][name], lib .. "." .. name .. " is not the library's")
      if fn ~= _G[lib][name] then names[#names + 1] = name end
    end
    table.sort(names)
    return names
  end
  local function replaced_line(lib)
    for what, names in pairs(lines) do
      if what:find("`" .. lib .. "`, every function", 1, true) == 1 then return names end
    end
    error("README lists no `" .. lib .. "`, every function")
  end

  it("string and coroutine: every function, the replaced ones named", function()
    assert.same(replaced("string"), replaced_line("string"))
    assert.same(replaced("coroutine"), replaced_line("coroutine"))
  end)

  it("the partial libraries os and io, and no other", function()
    assert.same(sorted_keys(env, function(k, v)
      return type(v) == "table" and k ~= "_G" and not whole(k, v) and k ~= "string" and k ~= "coroutine"
    end), { "io", "os" })
    assert.same(sorted_keys(env.os, function() return true end), lines["`os`, only"])
    assert.same(sorted_keys(env.io, function() return true end), lines["`io`, only"])
  end)

  it("what is not there, each an error naming it", function()
    for _, name in ipairs(lines["not there (using one is an error naming it)"]) do
      local lib, field = name:match("^(%w+)%.(%w+)$")
      local ok, err = pcall(function() if lib then return env[lib][field] end return env[name] end)
      assert.is_false(ok, name)
      assert.matches(name, err, 1, true)
    end
  end)

  it("the modules require gives", function()
    local want = {}
    for k in pairs(sandbox.PUBLIC) do want[#want + 1] = k end
    for k in pairs(sandbox.VIEWS) do want[#want + 1] = k end
    for k in pairs(sandbox.OTHER_MODULES) do want[#want + 1] = k end
    for _, prefix in ipairs(sandbox.PUBLIC_FAMILIES) do want[#want + 1] = prefix .. "*" end
    table.sort(want)
    assert.same(want, lines["`require`"])
  end)

  it("the fields of require \"certmaint\"", function()
    local certmaint = require "certmaint"
    local listed = {}
    for _, name in ipairs(lines['`require "certmaint"`']) do
      assert.is_not_nil(certmaint[name], name)
      listed[name] = true
    end
    for _, name in ipairs { "duration", "renewal", "keys", "storage", "issuer", "deploy" } do
      local _ = certmaint[name] -- loaded lazily: load them all, then every field must be listed
    end
    for k in pairs(certmaint) do assert.is_true(listed[k] ~= nil, "certmaint." .. k .. " is not in the README") end
  end)
end)

-- What the README says about where things land, checked against what lands there.
describe("README's storage and deploy layout", function()
  local testing = require "certmaint.testing"
  local certmaint = require "certmaint"
  local core = require "certmaint.core"
  local helpers = require "helpers.policies"
  after_each(testing.reset)

  local function says(text) assert.is_truthy(readme:find(text, 1, true), "README.md does not say: " .. text) end

  it("deploys a wildcard to wildcard_.<rest>, split and HAProxy layouts", function()
    says("`*.example.com` goes to\n  `<dir>/wildcard_.example.com/`, or `<dir>/wildcard_.example.com.pem`")
    testing.clock(testing.EPOCH)
    local dir = helpers.tmpdir()
    local split, haproxy = certmaint.deploy.files { dir = dir .. "/split" },
      certmaint.deploy.files { dir = dir .. "/haproxy", layout = "haproxy" }
    testing.engine(certmaint.policy { certificates = { "*.example.com" },
      on_renewed = function(cert) split(cert) haproxy(cert) end }, { storage = testing.memory() })
    assert.equal("file", core.stat(dir .. "/split/wildcard_.example.com/fullchain.pem").type)
    assert.equal("file", core.stat(dir .. "/haproxy/wildcard_.example.com.pem").type)
    os.execute("rm -rf " .. dir)
  end)

  it("keeps a wildcard in wildcard_.<rest>/ and the retry state in certmaint/state/<name>.json", function()
    says("`*.example.com` is kept in `wildcard_.example.com/`")
    says("`certmaint/state/<name>.json`,\n  a certificate's renewal retry state")
    testing.clock(testing.EPOCH)
    local storage = testing.memory()
    testing.engine(certmaint.policy { certificates = { "*.example.com", "down.test" },
      issuer = testing.issuer { name = "local", fail = 2 } }, { storage = storage })
    local keys = assert(storage:list("", true))
    local text = table.concat(keys, "\n")
    assert.matches("certmaint/state/wildcard_.example.com.json", text, 1, true)
    assert.matches("certmaint/state/down.test.json", text, 1, true)
  end)

  it("obtains a new certificate at start when the names of one change, in the same folder", function()
    says("obtains a new certificate with the new names at once")
    testing.clock(testing.EPOCH)
    local storage = testing.memory()
    local issuer = testing.issuer { name = "local" }
    testing.engine(certmaint.policy { certificates = { "a.test" }, issuer = issuer }, { storage = storage })
    assert.equal(1, issuer.issued)
    local e = testing.engine(certmaint.policy { certificates = { { "a.test", "www.a.test" } }, issuer = issuer },
      { storage = storage })
    assert.equal(2, issuer.issued)
    assert.same({ "a.test", "www.a.test" }, e:cert("www.a.test").names)
    assert.same({ "a.test", "www.a.test" }, core.cert_parse(storage:load("certificates/local/a.test/a.test.crt")).names)
  end)
end)
