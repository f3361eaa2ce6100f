-- certmaint.keys: names to storage keys in certmagic's (Caddy's) layout.
local keys = require "certmaint.keys"
local core = require "certmaint.core"

describe("certmaint.keys", function()
  describe("issuer_key", function()
    local cases = {
      { "https://127.0.0.1:14000/dir", "127.0.0.1-14000-dir" },
      { "https://acme-v02.api.letsencrypt.org/directory", "acme-v02.api.letsencrypt.org-directory" },
      { "https://acme-staging-v02.api.letsencrypt.org/directory",
        "acme-staging-v02.api.letsencrypt.org-directory" },
      { "https://acme.zerossl.com/v2/DV90", "acme.zerossl.com-v2-dv90" },
      { "https://example.com/acme-ca/directory", "example.com-acme-ca-directory" },
      { "https://ca.example/", "ca.example" },
      { "https://ca.example", "ca.example" },
      { "https://user:secret@ca.example:8443/a/b/?x=1#f", "ca.example-8443-a-b" },
      { "https://[::1]:14000/dir", "--1-14000-dir" },
      { "https://ca.example/a%2Fb", "ca.example-a-b" },
      { "local", "local" },
      { "Internal CA", "internal_ca" },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " -> " .. c[2], function()
        assert.equal(c[2], keys.issuer_key(c[1]))
      end)
    end

    it("is idempotent", function()
      for _, c in ipairs(cases) do assert.equal(c[2], keys.issuer_key(c[2])) end
    end)

    it("refuses what gives no key", function()
      assert.has_error(function() keys.issuer_key("") end)
      assert.has_error(function() keys.issuer_key("https:///") end)
      assert.has_error(function() keys.issuer_key(42) end)
    end)
  end)

  describe("safe (certmagic's KeyBuilder.Safe)", function()
    local cases = {
      { "example.com", "example.com" },
      { "*.example.com", "wildcard_.example.com" },
      { "Example.COM", "example.com" },
      { "  padded  ", "padded" },
      { "a b", "a_b" },
      { "a+b@example.com", "a_plus_b@example.com" },
      { "127.0.0.1:14000", "127.0.0.1-14000" },
      { "a/../../../foo", "afoo" },
      { "b\\..\\..\\..\\foo", "bfoo" },
      { "c/foo", "cfoo" },
      { "..", "" },
      { ".[.", "" },
      { "a.[.b", "ab" },
      { "x!#$%^&()=y", "xy" },
    }
    for _, c in ipairs(cases) do
      it(string.format("%q -> %q", c[1], c[2]), function()
        assert.equal(c[2], keys.safe(c[1]))
        assert.equal(c[2], keys.safe(keys.safe(c[1])))
      end)
    end
  end)

  describe("site keys", function()
    local ISSUER = "example.com-acme-ca-directory"
    local base = "certificates/" .. ISSUER

    it("match certmagic's TestPrefixAndKeyBuilders", function()
      assert.equal(base .. "/example.com", keys.site(ISSUER, "example.com"))
      assert.equal(base .. "/example.com/example.com.crt", keys.cert(ISSUER, "example.com"))
      assert.equal(base .. "/example.com/example.com.key", keys.private_key(ISSUER, "example.com"))
      assert.equal(base .. "/example.com/example.com.json", keys.meta(ISSUER, "example.com"))
      assert.equal(base .. "/wildcard_.example.com/wildcard_.example.com.crt",
        keys.cert(ISSUER, "*.example.com"))
    end)

    it("normalise the name first", function()
      assert.equal(keys.cert(ISSUER, "example.com"), keys.cert(ISSUER, "EXAMPLE.com."))
      assert.equal(base .. "/xn--bcher-kva.example/xn--bcher-kva.example.key",
        keys.private_key(ISSUER, "bücher.example"))
      assert.equal(base .. "/2001-db8--1/2001-db8--1.crt", keys.cert(ISSUER, "2001:DB8::1"))
      assert.equal(base .. "/192.0.2.1/192.0.2.1.json", keys.meta(ISSUER, "192.0.2.1"))
    end)

    it("refuse names that are not names (never a path)", function()
      for _, bad in ipairs { "a/../../../foo", "c/foo", "a_b.example", "", "*.*.example" } do
        assert.has_error(function() keys.cert(ISSUER, bad) end)
        assert.has_error(function() keys.site(ISSUER, bad) end)
      end
      local ok, err = pcall(keys.cert, ISSUER, "a_b.example")
      assert.is_false(ok)
      assert.matches('name "a_b.example"', err, 1, true)
    end)

    it("refuse issuer keys that are not safe", function()
      assert.has_error(function() keys.cert("https://x/dir", "example.com") end)
      assert.has_error(function() keys.cert("../x", "example.com") end)
      assert.has_error(function() keys.cert("", "example.com") end)
    end)

    it("hash names too long for a path component", function()
      local long = ("a"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("c"):rep(63) .. "." .. ("d"):rep(10)
      local nk = keys.name_key(long)
      assert.matches("^h_%x+$", nk)
      assert.equal(34, #nk)
      assert.is_true(keys.is_hashed(nk))
      assert.is_false(keys.is_hashed("example.com"))
      assert.equal(base .. "/" .. nk .. "/" .. nk .. ".crt", keys.cert(ISSUER, long))
      assert.equal("h_" .. core.sha256_hex(long):sub(1, 32), nk)
    end)

    it("site_files equals the four single builders", function()
      for _, name in ipairs { "example.com", "*.Example.com.", "2001:DB8::1", "bücher.example" } do
        assert.same({
          site = keys.site(ISSUER, name), cert = keys.cert(ISSUER, name),
          private_key = keys.private_key(ISSUER, name), meta = keys.meta(ISSUER, name),
          crt = keys.cert(ISSUER, name), key = keys.private_key(ISSUER, name),
        }, keys.site_files(ISSUER, name))
      end
      assert.has_error(function() keys.site_files(ISSUER, "a_b.example") end)
      assert.has_error(function() keys.site_files("../x", "example.com") end)
    end)

    it("cert_files equals keys.cert and keys.private_key, name by name", function()
      local names = { "example.com", "*.Example.com.", "2001:DB8::1", "bücher.example", string.rep("a", 60) .. "." .. string.rep("b", 60) .. ".example" }
      local crts, key_files = keys.cert_files(ISSUER, names, true)
      local only = keys.cert_files(ISSUER, names)
      for i, name in ipairs(names) do
        assert.equal(keys.cert(ISSUER, name), crts[i])
        assert.equal(keys.private_key(ISSUER, name), key_files[i])
      end
      assert.same(crts, only)
      assert.equal(#names, #crts)
      assert.is_nil(select(2, keys.cert_files(ISSUER, names)))
      assert.same({}, keys.cert_files(ISSUER, {}))
      assert.error_matches(function() keys.cert_files(ISSUER, { "ok.example", "a_b.example" }) end, "keys: ")
      assert.error_matches(function() keys.cert_files(ISSUER, { "ok.example", 7 }) end, "expected a string")
      assert.error_matches(function() keys.cert_files("../x", names) end, "not an issuer key")
    end)

    it("check an issuer key once, and keep refusing bad ones", function()
      -- a valid key is remembered; a bad one never is, however often it comes
      for _ = 1, 3 do
        assert.has_error(function() keys.cert("Not Safe", "example.com") end)
        assert.equal(base .. "/example.com/example.com.crt", keys.cert(ISSUER, "example.com"))
      end
      -- many distinct issuer keys (the memo is bounded) stay correct
      for i = 1, 600 do
        assert.equal("certificates/ca" .. i, keys.certs_prefix("ca" .. i))
      end
      assert.has_error(function() keys.certs_prefix("ca/1") end)
      assert.has_error(function() keys.certs_prefix(42) end)
    end)

    it("site_files gives all three", function()
      assert.same({
        site = base .. "/example.com",
        crt = base .. "/example.com/example.com.crt",
        key = base .. "/example.com/example.com.key",
        cert = base .. "/example.com/example.com.crt",
        private_key = base .. "/example.com/example.com.key",
        meta = base .. "/example.com/example.com.json",
      }, keys.site_files(ISSUER, "example.com"))
    end)
  end)

  describe("ocsp", function()
    it("is ocsp/<name>-<hash>", function()
      assert.equal("ocsp/example.com-1a2b3c4d", keys.ocsp("example.com", "1a2b3c4d"))
      assert.equal("ocsp/wildcard_.example.com-ff", keys.ocsp("*.example.com", "ff"))
      assert.equal("ocsp/ff", keys.ocsp(nil, "ff"))
      assert.has_error(function() keys.ocsp("example.com", "../x") end)
    end)

    it("fast_hash is certmagic's FNV-1a 32", function()
      -- reference values of hash/fnv New32a
      assert.equal("811c9dc5", keys.fast_hash(""))
      assert.equal("e40c292c", keys.fast_hash("a"))
      assert.equal("bf9cf968", keys.fast_hash("foobar"))
    end)

    it("fast_hash has no leading zeros, like Go's %x (the key Caddy writes)", function()
      assert.equal("0493fd3b", (core.fnv1a32("k120")))
      assert.equal("493fd3b", keys.fast_hash("k120"))
      assert.has_error(function() keys.fast_hash(nil) end)
    end)
  end)

  describe("locks", function()
    it("use certmagic's issue_cert_ names", function()
      assert.equal("issue_cert_example.com", keys.lock_name("Example.com."))
      assert.equal("locks/issue_cert_example.com.lock", keys.lock("example.com"))
      assert.equal("locks/issue_cert_wildcard_.example.com.lock", keys.lock("*.example.com"))
      assert.equal("locks/issue_cert_wildcard_.example.com.lock",
        keys.lock_file("issue_cert_*.example.com"))
      assert.equal("locks/storage_clean.lock", keys.lock_file("storage_clean"))
      assert.has_error(function() keys.lock_file("..") end)
    end)
  end)

  describe("acme_account", function()
    it("matches certmagic's users layout", function()
      assert.same({
        prefix = "acme/127.0.0.1-14000-dir/users/ops@example.com",
        registration = "acme/127.0.0.1-14000-dir/users/ops@example.com/ops.json",
        private_key = "acme/127.0.0.1-14000-dir/users/ops@example.com/ops.key",
      }, keys.acme_account("https://127.0.0.1:14000/dir", "Ops@Example.com"))
    end)

    it("uses 'default' without an e-mail", function()
      local a = keys.acme_account("acme-v02.api.letsencrypt.org-directory", nil)
      assert.equal("acme/acme-v02.api.letsencrypt.org-directory/users/default", a.prefix)
      assert.equal(a.prefix .. "/default.json", a.registration)
      assert.equal(a.prefix .. "/default.key", a.private_key)
      assert.same(a, keys.acme_account("acme-v02.api.letsencrypt.org-directory", ""))
    end)

    it("keeps odd addresses inside their folder", function()
      local a = keys.acme_account("local", "../../etc/passwd@x")
      assert.equal("acme/local/users/etcpasswd@x", a.prefix)
      assert.equal(a.prefix .. "/etcpasswd.key", a.private_key)
      a = keys.acme_account("local", "a+tag@example.com")
      assert.equal("acme/local/users/a_plus_tag@example.com/a_plus_tag.json", a.registration)
    end)

    it("acme_users lists the accounts folder", function()
      assert.equal("acme/127.0.0.1-14000-dir/users", keys.acme_users("https://127.0.0.1:14000/dir"))
    end)
  end)

  describe("crl", function()
    it("keys a CRL by its URL under certmaint/crl/, one component, as .der", function()
      local k = keys.crl("http://crl.example.test/ca.crl")
      assert.matches("^certmaint/crl/%x+%.der$", k)
      assert.equal(#"certmaint/crl/" + 32 + 4, #k)
      assert.equal(k, keys.crl("http://crl.example.test/ca.crl"))
      assert.equal(keys.CRL_PREFIX, k:match("^(.*)/"))
    end)

    it("gives different URLs different keys, whatever they contain", function()
      local a = keys.crl("http://127.0.0.1:8080/a.crl")
      local b = keys.crl("http://127.0.0.1:8080/b.crl")
      local odd = keys.crl("http://x/../../etc/passwd?q=1#f")
      assert.are_not.equal(a, b)
      assert.matches("^certmaint/crl/%x+%.der$", odd)
    end)

    it("raises for a URL that is no string or empty", function()
      assert.error_matches(function() keys.crl(nil) end, "keys.crl: expected a string", 1, true)
      assert.error_matches(function() keys.crl("") end, "keys.crl: the URL is empty", 1, true)
    end)
  end)

  describe("normalize", function()
    it("returns the name and its kind, or nil, err, invalid", function()
      assert.same({ "example.com", "dns" }, { keys.normalize("EXAMPLE.com.") })
      assert.same({ "*.example.com", "wildcard" }, { keys.normalize("*.example.com") })
      assert.same({ "::1", "ipv6" }, { keys.normalize("0::1") })
      assert.same({ "10.0.0.1", "ipv4" }, { keys.normalize("10.0.0.1") })
      local v, err, code = keys.normalize("a..b")
      assert.is_nil(v)
      assert.matches("a..b", err, 1, true)
      assert.equal("invalid", code)
    end)
  end)
end)
