-- certmaint.options: the one checker for Lua option tables.
local options = require "certmaint.options"

local HERE = debug.getinfo(1, "S").short_src

-- options.check(...) must raise; returns the message.
local function fails(...)
  local ok, err = pcall(options.check, ...)
  assert.is_false(ok)
  assert.is_string(err)
  return err
end

local SCHEMA = {
  dir = { type = "string", required = true },
  layout = { type = "string", default = "split",
    check = function(v) return v == "split" or v == "haproxy", 'must be "split" or "haproxy"' end },
  count = { type = "number", default = 3 },
  verbose = { type = "boolean", default = false },
  extra = { type = "table" },
  hook = { type = "function" },
  timeout = { type = "duration", default = "60s",
    check = function(v) return v <= 3600, "must be at most 1h" end },
  anything = { type = "any" },
}

describe("certmaint.options", function()
  describe("check", function()
    it("returns a new table with defaults applied and durations in seconds", function()
      local opts = { dir = "/srv", timeout = "1m30s" }
      local o = options.check(opts, SCHEMA, "thing")
      assert.are_not.equal(opts, o)
      assert.same({ dir = "/srv", layout = "split", count = 3, verbose = false, timeout = 90 }, o)
      assert.equal("1m30s", opts.timeout) -- the caller's table is left alone
      assert.equal(5, options.check({ dir = "x", timeout = 5 }, SCHEMA, "thing").timeout)
    end)

    it("takes nil as no options, and keeps false and values of any type", function()
      local o = options.check(nil, { a = { type = "boolean", default = true }, b = { type = "any" } }, "thing")
      assert.same({ a = true }, o)
      o = options.check({ a = false, b = 7 }, { a = { type = "boolean", default = true }, b = { type = "any" } }, "thing")
      assert.is_false(o.a)
      assert.equal(7, o.b)
    end)

    it("refuses a non-table", function()
      assert.matches("thing: options must be a table, not string", fails("dir", SCHEMA, "thing"), 1, true)
    end)

    it("requires what is required", function()
      assert.matches('thing: option "dir" is required', fails({}, SCHEMA, "thing"), 1, true)
    end)

    it("checks types, naming the option and both types", function()
      local cases = {
        { { dir = 42 }, 'option "dir" must be a string, not number' },
        { { dir = "x", count = "3" }, 'option "count" must be a number, not string' },
        { { dir = "x", verbose = "yes" }, 'option "verbose" must be a boolean, not string' },
        { { dir = "x", extra = "x" }, 'option "extra" must be a table, not string' },
        { { dir = "x", hook = {} }, 'option "hook" must be a function, not table' },
      }
      for _, c in ipairs(cases) do
        assert.matches("thing: " .. c[2], fails(c[1], SCHEMA, "thing"), 1, true)
      end
    end)

    it("takes callable tables as functions", function()
      local callable = setmetatable({}, { __call = function() end })
      assert.equal(callable, options.check({ dir = "x", hook = callable }, SCHEMA, "thing").hook)
    end)

    it("refuses bad durations with duration's own wording", function()
      assert.matches('thing: timeout: bad duration "soon" (use seconds or "90s", "10m", "1h", "7d")',
        fails({ dir = "x", timeout = "soon" }, SCHEMA, "thing"), 1, true)
      assert.matches("thing: timeout: bad duration -1", fails({ dir = "x", timeout = -1 }, SCHEMA, "thing"), 1, true)
    end)

    it("runs check on the value, after durations became seconds", function()
      assert.matches('thing: option "layout" must be "split" or "haproxy"',
        fails({ dir = "x", layout = "apache" }, SCHEMA, "thing"), 1, true)
      assert.matches('thing: option "timeout" must be at most 1h', fails({ dir = "x", timeout = "2h" }, SCHEMA, "thing"), 1, true)
      -- a default is checked like a given value
      local err = fails({}, { n = { type = "number", default = 0, check = function(v) return v > 0 end } }, "thing")
      assert.matches('thing: option "n" is invalid', err, 1, true)
    end)

    it("refuses an unknown key in one wording, suggesting a close name", function()
      assert.matches('thing: unknown option "layuot" (did you mean "layout"? known: anything, count, dir, extra, '
        .. 'hook, layout, timeout, verbose)', fails({ dir = "x", layuot = "split" }, SCHEMA, "thing"), 1, true)
      assert.matches('thing: unknown option "frobnicate" (known: anything, count, dir, extra, hook, layout, '
        .. 'timeout, verbose)', fails({ dir = "x", frobnicate = 1 }, SCHEMA, "thing"), 1, true)
      assert.matches('thing: unexpected positional value [1] (options are named: name = value; known: ',
        fails({ "x" }, SCHEMA, "thing"), 1, true)
    end)

    it("names the same unknown key whatever the table's order", function()
      for _ = 1, 20 do
        local err = fails({ dir = "x", zz = 1, bb = 2, [1] = 3, yy = 4 }, SCHEMA, "thing")
        assert.matches('unknown option "bb"', err, 1, true)
      end
    end)

    it("names the caller's file:line, as error()'s level in the function calling check", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() return options.check({ bad = 1 }, SCHEMA, "thing") end)
      assert.is_false(ok)
      assert.matches("^" .. HERE:gsub("%p", "%%%0") .. ":" .. line .. ': thing: unknown option "bad"', err)

      local function constructor(opts) return options.check(opts, SCHEMA, "thing", 2) end
      line = debug.getinfo(1, "l").currentline + 1
      ok, err = pcall(function() local o = constructor { dir = 1 } return o end)
      assert.is_false(ok)
      assert.matches("^" .. HERE:gsub("%p", "%%%0") .. ":" .. line .. ': thing: option "dir" must be a string', err)
    end)

    it("names the caller's line through certmaint's own wrappers", function()
      -- certmaint.issuer.internal goes through issuer/init.lua and internal.lua
      local issuer = require "certmaint.issuer"
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() local i = issuer.internal { lifetme = "7d" } return i end)
      assert.is_false(ok)
      assert.matches("^" .. HERE:gsub("%p", "%%%0") .. ":" .. line
        .. ': certmaint.issuer.internal: unknown option "lifetme" %(did you mean "lifetime"%?', err)
    end)

    it("raises on a schema rule without a valid type (a bug in the constructor)", function()
      assert.has_error(function() options.check({}, { a = { type = "str" } }, "thing") end)
    end)
  end)

  describe("helpers", function()
    it("suggest finds close names and nothing for far ones", function()
      assert.equal("layout", options.suggest("layuot", { "dir", "layout", "reload" }))
      assert.equal("renewal_window_ratio", options.suggest("renew_windwo", { "renew_check_interval", "renewal_window_ratio" }))
      assert.equal("dir", options.suggest("DIR", { "dir", "layout" }))
      assert.is_nil(options.suggest("xyz", { "storage", "issuer" }))
      assert.is_nil(options.suggest(1, { "a" }))
    end)

    it("unknown gives the key, the suggestion and the known names", function()
      local k, hint, names = options.unknown({ dri = 1, layout = 2 }, { dir = true, layout = true })
      assert.equal("dri", k)
      assert.equal("dir", hint)
      assert.same({ "dir", "layout" }, names)
      assert.is_nil(options.unknown({ dir = 1 }, { dir = true }))
    end)

    it("callable is true for functions and __call tables only", function()
      assert.is_true(options.callable(print))
      assert.is_true(options.callable(setmetatable({}, { __call = print })))
      assert.is_false(options.callable({}))
      assert.is_false(options.callable("print"))
    end)
  end)
end)
