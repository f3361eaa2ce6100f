-- core/lua/lcrypto.c: hashes, random bytes, base64 and base64url.
local core = require "certmaint.core"

describe("core crypto bindings", function()
  it("sha256 and sha256_hex", function()
    assert.equal(32, #core.sha256("abc"))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      core.sha256_hex("abc"))
    assert.equal(core.sha256_hex("a\0b"), (core.sha256("a\0b"):gsub(".",
      function(c) return string.format("%02x", c:byte()) end)))
  end)

  it("random_bytes", function()
    assert.equal(0, #core.random_bytes(0))
    assert.equal(32, #core.random_bytes(32))
    assert.not_equal(core.random_bytes(16), core.random_bytes(16))
    assert.has_error(function() core.random_bytes(-1) end)
    assert.has_error(function() core.random_bytes(2 * 1024 * 1024) end)
  end)

  it("base64url: no padding, strict", function()
    assert.equal("-__-", core.base64url_encode("\xfb\xff\xfe"))
    assert.equal("Zm9vYg", core.base64url_encode("foob"))
    assert.equal("foob", core.base64url_decode("Zm9vYg"))
    for _, bad in ipairs { "Zm9vYg==", "Zm9vYh", "Zm9v+g", "Zm9 v", "Z" } do
      local v, err, code = core.base64url_decode(bad)
      assert.is_nil(v, bad)
      assert.equal("invalid", code)
      assert.matches("^base64url: ", err)
    end
  end)

  it("base64: padded, strict", function()
    assert.equal("+//+", core.base64_encode("\xfb\xff\xfe"))
    assert.equal("Zm9vYg==", core.base64_encode("foob"))
    assert.equal("foob", core.base64_decode("Zm9vYg=="))
    for _, bad in ipairs { "Zm9vYg", "Zm9vYh==", "Zm9v-g==", "Zm9v\nYg==" } do
      local v, _, code = core.base64_decode(bad)
      assert.is_nil(v, bad)
      assert.equal("invalid", code)
    end
  end)

  it("round-trips every byte", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for n = 0, 7 do
      local s = all:sub(1, 250 + n)
      assert.equal(s, core.base64url_decode(core.base64url_encode(s)))
      assert.equal(s, core.base64_decode(core.base64_encode(s)))
    end
  end)
end)
