-- core.json_encode / core.json_decode (jansson underneath).
local core = require "certmaint.core"

local encode, decode, null, array_mt = core.json_encode, core.json_decode, core.json_null,
  core.json_array_mt

local function nest(depth, leaf)
  local v = leaf
  for _ = 1, depth do v = { v } end
  return v
end

describe("core.json_encode", function()
  it("encodes scalars", function()
    assert.equal('"hi"', encode("hi"))
    assert.equal("42", encode(42))
    assert.equal("-7", encode(-7))
    assert.equal("1.5", encode(1.5))
    assert.equal("true", encode(true))
    assert.equal("false", encode(false))
    assert.equal("null", encode(null))
    assert.equal("null", encode(nil))
    assert.equal("9223372036854775807", encode(math.maxinteger))
  end)

  it("keeps integer and float apart", function()
    assert.equal("3", encode(3))
    assert.equal("3.0", encode(3.0))
    assert.equal(0.1, decode(encode(0.1)))
    assert.equal(1700000000.123, decode(encode(1700000000.123)))
  end)

  it("escapes strings, NUL and non-ASCII included", function()
    assert.equal('"a\\"b\\\\c\\n\\u0000"', encode('a"b\\c\n\0'))
    assert.equal('"bücher"', encode("bücher"))
  end)

  it("tells arrays from objects", function()
    assert.equal("[1,2,3]", encode { 1, 2, 3 })
    assert.equal('{"a":1}', encode { a = 1 })
    assert.equal("{}", encode {})
    assert.equal("[]", encode(setmetatable({}, array_mt)))
    assert.equal('[1,"x",null,[]]', encode { 1, "x", null, setmetatable({}, array_mt) })
  end)

  it("sorts keys by default, so output is stable", function()
    assert.equal('{"a":1,"b":{"c":true,"d":[1]},"z":null}',
      encode { z = null, b = { d = { 1 }, c = true }, a = 1 })
    local unsorted = encode({ z = 1, a = 2 }, { sort_keys = false })
    assert.same({ z = 1, a = 2 }, decode(unsorted))
  end)

  it("pretty-prints with two spaces", function()
    assert.equal('{\n  "a": [\n    1,\n    2\n  ],\n  "b": "x"\n}',
      encode({ a = { 1, 2 }, b = "x" }, { pretty = true }))
  end)

  it("raises on unknown options", function()
    assert.has_error(function() encode({}, { prety = true }) end)
    assert.has_error(function() encode({}, "pretty") end)
    assert.has_error(function() encode() end)
  end)

  local refused = {
    { "a cycle", function() local t = {}; t.self = t; return t end, "cycle at $.self" },
    { "a cycle through an array", function() local t = {}; t[1] = { t }; return t end,
      "cycle at $[1][1]" },
    { "nesting deeper than 64", function() return nest(65, 1) end, "nesting deeper than 64" },
    { "a function", function() return { f = print } end, "cannot encode a function at $.f" },
    { "a coroutine", function() return { coroutine.create(print) } end, "cannot encode a thread at $[1]" },
    { "a full userdata", function() return { x = io.stdout } end, "cannot encode a userdata at $.x" },
    { "mixed keys", function() return { 1, 2, x = 3 } end, "mixes non-string keys" },
    { "a sparse array", function() return { [1] = 1, [3] = 3 } end, "sparse array" },
    { "number keys", function() return { [2] = "x" } end, "sparse array" },
    { "float keys", function() return { [1.5] = "x" } end, "mixes non-string keys" },
    { "NaN", function() return { n = 0 / 0 } end, "NaN or infinity at $.n" },
    { "infinity", function() return { math.huge } end, "NaN or infinity at $[1]" },
    { "invalid UTF-8", function() return { s = "\xff" } end, "not valid UTF-8 at $.s" },
    { "an invalid UTF-8 key", function() return { ["\xff"] = 1 } end, "key is not valid UTF-8" },
  }
  for _, case in ipairs(refused) do
    it("refuses " .. case[1], function()
      local v, err, code = encode(case[2]())
      assert.is_nil(v)
      assert.equal("invalid", code)
      assert.matches(case[3], err, 1, true)
    end)
  end

  it("allows exactly 64 levels", function()
    assert.is_string(encode(nest(64, 1)))
  end)

  it("allows the same table twice when it is not a cycle", function()
    local shared = { 1 }
    assert.equal('{"a":[1],"b":[1]}', encode { a = shared, b = shared })
  end)
end)

describe("core.json_decode", function()
  it("decodes objects, arrays and scalars", function()
    local v = decode('{"a":[1,2.5,"x",true,false,null],"b":{},"c":[]}')
    assert.same({ 1, 2.5, "x", true, false, null }, v.a)
    assert.same({}, v.b)
    assert.same({}, v.c)
    assert.equal(array_mt, getmetatable(v.a))
    assert.equal(array_mt, getmetatable(v.c))
    assert.is_nil(getmetatable(v.b))
    assert.equal(null, v.a[6])
    assert.equal(6, #v.a)
    assert.equal("x", decode('"x"'))
    assert.equal(null, decode("null"))
  end)

  it("keeps integers integers", function()
    local v = decode('[1, -2, 9007199254740993, 1.0, 1e3]')
    assert.equal("integer", math.type(v[1]))
    assert.equal("integer", math.type(v[2]))
    assert.equal(9007199254740993, v[3])
    assert.equal("integer", math.type(v[3]))
    assert.equal("float", math.type(v[4]))
    assert.equal("float", math.type(v[5]))
  end)

  it("reads integers too big for 64 bits as floats", function()
    local v = decode('[123456789012345678901234567890, 7]')
    assert.equal("float", math.type(v[1]))
    assert.is_true(math.abs(v[1] - 1.2345678901234568e29) < 1e15)
    assert.equal("integer", math.type(v[2]))
  end)

  it("decodes escapes and NUL", function()
    assert.equal("a\0b", decode('"a\\u0000b"'))
    assert.equal("é€😀", decode('"\\u00e9\\u20ac\\ud83d\\ude00"'))
  end)

  it("reads Caddy's lock files", function()
    local v = decode('{"created":"2024-03-01T12:59:55.1+01:00","updated":"2024-03-01T12:59:55.1+01:00"}\n')
    assert.equal("2024-03-01T12:59:55.1+01:00", v.created)
  end)

  local bad = {
    { "", "json: line 1 column 0:" },
    { "{", "json: line 1 column 1:" },
    { '{"a":1,}', "json: line 1 column 8:" },
    { '{"a":1}\n{"b":2}', "json: line 2 column" },
    { "[1,\n2,\n@]", "json: line 3 column 1:" },
    { '{"a":1,"a":2}', "duplicate object key" },
    { "'single'", "json: line 1" },
    { "NaN", "json: line 1" },
    { '"\xff"', "json: line 1" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. string.format("%q", case[1]), function()
      local v, err, code = decode(case[1])
      assert.is_nil(v)
      assert.equal("parse", code)
      assert.matches(case[2], err, 1, true)
    end)
  end

  it("limits nesting to 64", function()
    assert.is_table(decode(("["):rep(64) .. ("]"):rep(64)))
    local v, err, code = decode(("["):rep(65) .. ("]"):rep(65))
    assert.is_nil(v)
    assert.equal("parse", code)
    assert.matches("nesting deeper than 64", err, 1, true)
    v, err, code = decode(("{\"a\":"):rep(100) .. "1" .. ("}"):rep(100))
    assert.is_nil(v)
    assert.equal("parse", code)
    -- deeper than jansson's own limit: still an error, not a crash
    v, _, code = decode(("["):rep(100000))
    assert.is_nil(v)
    assert.equal("parse", code)
  end)

  it("bounds the input", function()
    local text = '"' .. ("x"):rep(100) .. '"'
    assert.is_string(decode(text, 102))
    local v, err, code = decode(text, 101)
    assert.is_nil(v)
    assert.equal("toobig", code)
    assert.matches("larger than 101", err, 1, true)
    v, _, code = decode(("1"):rep(2 * 1024 * 1024))
    assert.is_nil(v)
    assert.equal("toobig", code)
    assert.has_error(function() decode("1", -1) end)
  end)

  it("round-trips what it encodes", function()
    local value = {
      name = "example.com", names = { "example.com", "*.example.com" }, serial = "0a1b",
      not_after = 1900000000, ratio = 1 / 3, managed = true, ocsp = null,
      issuers = setmetatable({}, array_mt), meta = {},
      nested = { { { deep = { 1, 2, { 3 } } } } },
    }
    local text = assert(encode(value))
    local back = decode(text)
    assert.same(value, back)
    assert.equal(text, encode(back))
    assert.equal(text, encode(decode(encode(value, { pretty = true }))))
  end)
end)
