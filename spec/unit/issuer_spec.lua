-- certmaint.issuer: the one check of an issuer object, where the policy is made.
local issuer = require "certmaint.issuer"
local policy = require "certmaint.policy"

local THIS = debug.getinfo(1, "S").source:sub(2)

local function good()
  return {
    issue = function() return nil, "not in this spec" end,
    revoke = function() return true end,
    storage_key = function() return "my-ca" end,
    describe = function() return "my CA" end,
  }
end

-- policy { issuer = obj } must fail at this file's line, naming the method.
local function policy_error(obj)
  local line = debug.getinfo(1, "l").currentline + 1
  local ok, err = pcall(policy, { certificates = {}, issuer = obj })
  assert.is_false(ok)
  local prefix = THIS .. ":" .. line .. ': policy field "issuer": '
  assert.equal(prefix, err:sub(1, #prefix))
  return err:sub(#prefix + 1)
end

describe("certmaint.issuer", function()
  describe("check", function()
    it("accepts an issuer with every method, and one with only issue", function()
      assert.is_true(issuer.check(good()))
      assert.is_true(issuer.check { issue = function() end })
    end)

    it("accepts methods served by a class (__index) and callable tables", function()
      local Class = {}
      Class.__index = Class
      function Class.issue() end
      Class.describe = setmetatable({}, { __call = function() return "callable" end })
      local obj = setmetatable({}, Class)
      assert.is_true(issuer.check(obj))
      assert.is_true(issuer.check { issue = setmetatable({}, { __call = function() end }) })
    end)

    it("refuses an object without issue, naming it", function()
      local obj = good()
      obj.issue = nil
      local ok, err, method = issuer.check(obj)
      assert.is_nil(ok)
      assert.equal("issue", method)
      assert.equal("issuer.issue is missing (an issuer needs issue(req, ctx) -> { chain_pem = ... } | nil, err)", err)
    end)

    it("refuses an issue that is not callable", function()
      local ok, err, method = issuer.check { issue = "acme" }
      assert.is_nil(ok)
      assert.equal("issue", method)
      assert.equal("issuer.issue must be a function, got string", err)
    end)

    for _, name in ipairs { "revoke", "storage_key", "describe" } do
      it("refuses an optional " .. name .. " that is present but not callable", function()
        local obj = good()
        obj[name] = "text"
        local ok, err, method = issuer.check(obj)
        assert.is_nil(ok)
        assert.equal(name, method)
        assert.matches("^issuer%." .. name .. " must be a function %(.*%) when present, got string$", err)
        -- a table without __call is not callable either
        obj[name] = {}
        ok, err = issuer.check(obj)
        assert.is_nil(ok)
        assert.matches("got table$", err)
      end)
    end

    it("refuses what is not an object", function()
      for _, v in ipairs { "acme", 42, true, function() end } do
        local ok, err, method = issuer.check(v)
        assert.is_nil(ok)
        assert.is_nil(method)
        assert.equal("expected an issuer object (with methods issue), got " .. type(v), err)
      end
    end)

    it("treats a strict object that raises on a missing key as missing the method", function()
      local strict = setmetatable({ issue = function() end }, {
        __index = function(_, k) error("no field " .. k) end,
      })
      assert.is_true(issuer.check(strict))
      local bad = setmetatable({}, { __index = function(_, k) error("no field " .. k) end })
      local ok, err = issuer.check(bad)
      assert.is_nil(ok)
      assert.matches("issuer.issue is missing", err, 1, true)
    end)
  end)

  describe("in a policy", function()
    it("is checked where the policy is made, naming the method and the file:line", function()
      local obj = good()
      obj.describe = "my CA"
      assert.matches("^issuer%.describe must be a function", policy_error(obj))
      assert.matches("^issuer%.issue is missing", policy_error { describe = function() end })
      assert.equal('expected an issuer object (with methods issue), got string "acme"', policy_error("acme"))
    end)

    it("is reported at the policy file's line when the file returns the call (sandbox)", function()
      local sandbox = require "certmaint.sandbox"
      local P, err = sandbox.load_policy("spec/fixtures/policies/err_issuer.lua")
      assert.is_nil(P)
      assert.equal('spec/fixtures/policies/err_issuer.lua:5: policy field "issuer": issuer.describe must be a '
        .. "function (describe() -> text for logs) when present, got string", err)
    end)

    it("keeps a good issuer as it is (not copied)", function()
      local obj = good()
      assert.equal(obj, policy { certificates = {}, issuer = obj }.issuer)
      local internal = issuer.internal {}
      assert.equal(internal, policy { certificates = {}, issuer = internal }.issuer)
    end)
  end)

  describe("storage_key and describe", function()
    it("ask the issuer, or give defaults when it has no such method", function()
      assert.equal("my-ca", issuer.storage_key(good()))
      assert.equal("my CA", issuer.describe(good()))
      assert.equal(issuer.DEFAULT_STORAGE_KEY, issuer.storage_key { issue = print })
      assert.equal("custom issuer", issuer.describe { issue = print })
    end)

    it("pass the issuer itself to its methods", function()
      local obj = { issue = print, name = "x" }
      function obj:storage_key() return self.name .. "-key" end
      function obj:describe() return "issuer " .. self.name end
      assert.equal("x-key", issuer.storage_key(obj))
      assert.equal("issuer x", issuer.describe(obj))
    end)

    it("refuse a storage_key that is not a non-empty string", function()
      for _, v in ipairs { "", 42, false } do
        local obj = { issue = print, storage_key = function() return v end }
        assert.error_matches(function() issuer.storage_key(obj) end,
          "issuer:storage_key() must return a non-empty string", 1, true)
      end
    end)

    it("are what the internal issuer answers", function()
      local internal = issuer.internal { name = "lab", lifetime = "1d" }
      assert.is_true(issuer.check(internal))
      assert.equal("lab", issuer.storage_key(internal))
      assert.equal('internal CA "lab" (leaf lifetime 1d)', issuer.describe(internal))
    end)
  end)
end)
