-- core/lua/lname.c: the one name normaliser and storage-key maker.
local core = require "certmaint.core"

describe("core name bindings", function()
  it("normalise names and say what they are", function()
    assert.same({ "example.com", "dns" }, { core.name_normalize("Example.COM.") })
    assert.same({ "xn--bcher-kva.example", "dns" }, { core.name_normalize("BÜCHER.example") })
    assert.same({ "*.example.com", "wildcard" }, { core.name_normalize("*.example.com") })
    assert.same({ "192.0.2.1", "ipv4" }, { core.name_normalize("192.0.2.1") })
    assert.same({ "2001:db8::1", "ipv6" }, { core.name_normalize("2001:DB8:0:0::1") })
  end)

  it("refuse bad names with nil, message, invalid", function()
    for _, bad in ipairs { "", "a_b.example", "*.*.example", "a.*.example", "-a.example",
      ("a"):rep(64) .. ".example", "a..example", "exa mple.com", "1.2.3.4.", "a\0b" } do
      local v, err, code = core.name_normalize(bad)
      assert.is_nil(v, bad)
      assert.equal("invalid", code)
      assert.matches('^name "', err)
    end
    assert.has_error(function() core.name_normalize(nil) end)
  end)

  it("give storage keys", function()
    assert.equal("wildcard_.example.com", core.name_storage_key("*.Example.com"))
    assert.equal("2001-db8--1", core.name_storage_key("2001:db8::1"))
    assert.equal("example.com", core.name_storage_key("example.com."))
    local v, err, code = core.name_storage_key("2001-db8--1")
    assert.is_nil(v)
    assert.equal("invalid", code)
    assert.matches("IPv6 address 2001:db8::1", err, 1, true)
  end)
end)
