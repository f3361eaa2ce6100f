local sandbox = require "certmaint.sandbox"
local helpers = require "helpers.policies"

local function write_policy(src)
  local dir = helpers.tmpdir()
  local path = dir .. "/policy.lua"
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path, dir
end

describe("sandbox.load_policy", function()
  it("loads a good policy", function()
    local path = write_policy('local c = require "certmaint"\nreturn c.policy { certificates = { "a.test" } }\n')
    local p = assert(sandbox.load_policy(path))
    assert.equal("a.test", p.certificates[1].names[1])
  end)

  it("names file:line of a syntax error", function()
    local path = write_policy('return {\n  x = = 1\n}\n')
    local p, err = sandbox.load_policy(path)
    assert.is_nil(p)
    assert.matches("policy.lua:2:", err)
  end)

  it("refuses reading an undefined global, naming it and the line", function()
    local path = write_policy('local c = require "certmaint"\nreturn c.policy { certificates = { hostnme } }\n')
    local p, err = sandbox.load_policy(path)
    assert.is_nil(p)
    assert.matches("policy.lua:2:.*hostnme", err)
  end)

  it("refuses assigning a global", function()
    local path = write_policy('x = 1\nreturn nil\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("policy.lua:1:.*global 'x'", err)
  end)

  it("has no os.execute or io.popen (they would block the loop)", function()
    local path = write_policy('return os.execute\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("policy.lua:1: os.execute is not available in a policy: it would block the loop", err)
    path = write_policy('return io.popen\n')
    _, err = sandbox.load_policy(path)
    assert.matches("popen", err)
  end)

  it("refuses modules outside certmaint, lfs and the policy's folder", function()
    local path = write_policy('require "socket"\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("module 'socket' is not allowed", err)
  end)

  it("loads the operator's own module from next to the policy", function()
    local path, dir = write_policy('local d = require "mydomains"\nlocal c = require "certmaint"\nreturn c.policy { certificates = d }\n')
    local f = assert(io.open(dir .. "/mydomains.lua", "w"))
    f:write('return { "x.test", "y.test" }\n')
    f:close()
    local p = assert(sandbox.load_policy(path))
    assert.equal(2, #p.certificates)
  end)

  it("refuses binary chunks through load", function()
    local path = write_policy('return load(string.dump(function() end), "x", "b")\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("only text chunks", err)
  end)

  it("says what a policy returned when it is not a policy", function()
    local path = write_policy('return { certificates = { "a.test" } }\n')
    local _, err = sandbox.load_policy(path)
    assert.matches("must return certmaint.policy", err)
  end)

  it("gives policies their own environment", function()
    local p1 = write_policy('local c = require "certmaint"\nstring.evil = true\nreturn c.policy { certificates = { "a.test" } }\n')
    assert(sandbox.load_policy(p1))
    assert.is_nil(string.evil)
  end)
end)
