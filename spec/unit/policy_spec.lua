local policy = require "certmaint.policy"

local DIR = "spec/fixtures/policies/"
local THIS = debug.getinfo(1, "S").source:sub(2)

-- The line of `path` that contains `needle` (plain text), for expected file:line.
local function line_of(path, needle)
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if line:find(needle, 1, true) then return n end
  end
  error(needle .. " not in " .. path)
end

-- policy.load(path) must fail; returns the message.
local function load_err(name, env)
  local P, err, code = policy.load(DIR .. name, env)
  assert.is_nil(P)
  assert.equal("string", type(err))
  return err, code
end

-- An environment for err_field_tail.lua: the globals plus FIELD and VALUE.
local function env_with(field, value)
  return setmetatable({ FIELD = field, VALUE = value }, { __index = _G })
end

local function storage_object()
  local s = {}
  for _, m in ipairs(policy.STORAGE_METHODS) do s[m] = function() end end
  return s
end

describe("certmaint.policy", function()
  describe("defaults", function()
    it("fills every default in a minimal policy", function()
      local P = assert(policy.load(DIR .. "ok_minimal.lua"))
      assert.is_true(policy.is_policy(P))
      assert.equal(DIR .. "ok_minimal.lua:3", P.source)
      assert.same({ { names = { "example.com" }, key_type = "p256", on_demand = false } }, P.certificates)
      assert.equal(600, P.renew_check_interval)
      assert.equal(3600, P.ocsp_check_interval)
      assert.equal(86400, P.clean_interval)
      assert.is_nil(P.renewal_window_ratio)
      assert.same({ ocsp_staples = true, expired_certs = true, expired_cert_grace_period = 86400 }, P.clean)
      assert.equal("p256", P.key_type)
      assert.equal(8, P.concurrency)
      assert.equal("integer", math.type(P.concurrency))
      assert.same({ format = "text", level = "info" }, P.log)
      for _, k in ipairs { "storage", "issuer", "needs_renewal", "on_revoked", "allow_name",
                           "on_tick", "on_renewed", "on_error" } do
        assert.is_nil(P[k], k)
      end
    end)

    it("fills defaults inside partly given sub-tables", function()
      local P = policy { certificates = {}, clean = { ocsp_staples = false }, log = { level = "warn" } }
      assert.same({ ocsp_staples = false, expired_certs = true, expired_cert_grace_period = 86400 }, P.clean)
      assert.same({ format = "text", level = "warn" }, P.log)
    end)

    it("allows an empty certificates list (names can come at run time)", function()
      assert.same({}, policy { certificates = {} }.certificates)
    end)
  end)

  describe("a full policy", function()
    it("keeps every value, in seconds and normalised", function()
      local P = assert(policy.load(DIR .. "ok_full.lua"))
      assert.equal(DIR .. "ok_full.lua:" .. line_of(DIR .. "ok_full.lua", "return certmaint.policy"), P.source)
      assert.same({
        { names = { "example.com" }, key_type = "p384", on_demand = false },
        { names = { "www.example.org", "example.org" }, key_type = "p384", on_demand = false },
        { names = { "*.example.net" }, key_type = "rsa2048", on_demand = true },
      }, P.certificates)
      assert.equal(300, P.renew_check_interval)
      assert.equal(7200, P.ocsp_check_interval)
      assert.equal(7 * 86400, P.clean_interval)
      assert.equal(0.25, P.renewal_window_ratio)
      assert.same({ ocsp_staples = false, expired_certs = false, expired_cert_grace_period = 5400 }, P.clean)
      assert.equal("p384", P.key_type)
      assert.equal(3, P.concurrency)
      assert.same({ format = "json", level = "debug" }, P.log)
      for _, k in ipairs { "needs_renewal", "on_revoked", "allow_name", "on_tick", "on_renewed", "on_error" } do
        assert.equal("function", type(P[k]), k)
      end
      assert.equal("function", type(P.storage.lock))
      assert.equal("function", type(P.issuer.issue))
    end)

    it("returns a new table and leaves the spec alone", function()
      local names = { "A.example.", "b.example" }
      local store = storage_object()
      local spec = { certificates = { names }, renew_check_interval = "5m", storage = store }
      local P = policy(spec)
      assert.are_not.equal(spec, P)
      assert.equal("5m", spec.renew_check_interval)
      assert.same({ "A.example.", "b.example" }, names)
      assert.is_nil(spec.source)
      assert.equal(store, P.storage) -- objects are kept, not copied
      assert.is_false(policy.is_policy(spec))
      assert.equal(P, policy(P)) -- already validated
    end)

    it("accepts callable tables as hooks and userdata-like objects", function()
      local hook = setmetatable({}, { __call = function() return true end })
      local P = policy { certificates = {}, needs_renewal = hook }
      assert.equal(hook, P.needs_renewal)
    end)

    it("accepts a policy file that returns a plain table", function()
      local P = assert(policy.load(DIR .. "ok_plain_table.lua"))
      assert.equal(300, P.renew_check_interval)
      assert.equal(DIR .. "ok_plain_table.lua", P.source)
    end)
  end)

  describe("file:line", function()
    it("is the policy file's when loaded with policy.load (a tail call)", function()
      local err, code = load_err("err_unknown_field.lua")
      assert.equal("policy", code)
      assert.equal(DIR .. 'err_unknown_field.lua:5: policy field "renew_windwo" is unknown (did you mean "renewal_window_ratio"?)', err)
    end)

    it("is the policy file's when loaded with plain loadfile and not a tail call", function()
      local P = assert(loadfile(DIR .. "ok_local.lua"))()
      assert.equal(DIR .. "ok_local.lua:3", P.source)
      local chunk = assert(loadfile(DIR .. "err_field.lua"))
      local ok, err = pcall(chunk, "concurrency", "8")
      assert.is_false(ok)
      assert.equal(DIR .. "err_field.lua:" .. line_of(DIR .. "err_field.lua", "the reported line")
        .. ': policy field "concurrency": expected an integer from 1 to 1000, got string "8"', err)
    end)

    it("is the policy file's whatever loader runs the chunk (here one that pcalls it by hand)", function()
      -- what a loader such as certmaint.sandbox does: the chunk in a local, pcall'ed
      local function loader(path)
        local chunk = assert(loadfile(path))
        local ok, res = pcall(chunk)
        return ok, res
      end
      local ok, err = loader(DIR .. "err_unknown_field.lua")
      assert.is_false(ok)
      assert.equal(DIR .. 'err_unknown_field.lua:5: policy field "renew_windwo" is unknown (did you mean "renewal_window_ratio"?)', err)
      local P
      ok, P = loader(DIR .. "ok_minimal.lua")
      assert.is_true(ok)
      assert.equal(DIR .. "ok_minimal.lua:3", P.source)
    end)

    it("is the field's own line inside the constructor, nested fields too", function()
      local err = load_err("err_nested_field.lua")
      assert.equal(DIR .. "err_nested_field.lua:" .. line_of(DIR .. "err_nested_field.lua", "expired_cert_grace_period =")
        .. ': policy field "clean.expired_cert_grace_period": bad duration "a day" (use seconds or "90s", "10m", "1h", "7d")', err)
      -- a same-named key in another table of the constructor is not taken for it
      local P, err2 = policy.load(DIR .. "err_nested_field.lua", setmetatable({ BAD_LOG = true }, { __index = _G }))
      assert.is_nil(P)
      assert.equal(DIR .. "err_nested_field.lua:" .. line_of(DIR .. "err_nested_field.lua", "  level = BAD_LOG")
        .. ': policy field "log.level": "loud" is not one of "debug", "info", "warn", "error"', err2)
    end)

    it("skips a commented-out call when it has to read the file", function()
      local err = load_err("err_field_tail.lua", env_with("key_type", "ed25519"))
      assert.equal(DIR .. "err_field_tail.lua:6: policy field \"key_type\": \"ed25519\" is not one of "
        .. '"p256", "p384", "rsa2048", "rsa4096"', err)
    end)

    it("is the caller's line for a direct call, through pcall and levels", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(policy, { certificates = {}, concurrency = 0 })
      assert.is_false(ok)
      assert.equal(THIS .. ":" .. line .. ': policy field "concurrency": expected an integer from 1 to 1000, got number 0', err)

      local function wrapper(spec)
        local P = policy(spec, 3) -- 1 = policy, 2 = wrapper, 3 = wrapper's caller
        return P
      end
      local function tail_wrapper(spec) return policy(spec, 3) end
      line = debug.getinfo(1, "l").currentline + 1
      local P = wrapper { certificates = {} }
      assert.equal(THIS .. ":" .. line, P.source)
      line = debug.getinfo(1, "l").currentline + 1
      P = tail_wrapper { certificates = {} }
      assert.equal(THIS .. ":" .. line, P.source)
      assert.has_error(function() policy({ certificates = {} }, 0) end)
    end)

    it("goes through certmaint.policy", function()
      local certmaint = require "certmaint"
      local line = debug.getinfo(1, "l").currentline + 1
      local P = certmaint.policy { certificates = { "example.com" } }
      assert.equal(THIS .. ":" .. line, P.source)
    end)

    it("is where certmaint.policy is written, for a tail call from any function", function()
      local certmaint = require "certmaint"
      local line = debug.getinfo(1, "l").currentline + 3
      local function make(extra)
        local spec = { certificates = { "example.com" }, concurrency = extra }
        return certmaint.policy(spec)
      end
      assert.equal(THIS .. ":" .. line, make(2).source)
      local ok, err = pcall(make, 0)
      assert.is_false(ok)
      assert.equal(THIS .. ":" .. line .. ': policy field "concurrency": expected an integer from 1 to 1000, got number 0', err)
    end)

    it("is the call's line when certmaint.policy was kept in a local and called as a statement", function()
      local validate = require("certmaint").policy
      local line = debug.getinfo(1, "l").currentline + 1
      local P = validate { certificates = {} }
      assert.equal(THIS .. ":" .. line, P.source)
      line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(validate, { certificates = {}, bogus = 1 })
      assert.is_false(ok)
      local want = THIS .. ":" .. line .. ': policy field "bogus" is unknown'
      assert.equal(want, err:sub(1, #want))
    end)

    it("is the given source with policy.validate", function()
      local P = policy.validate({ certificates = {} }, "somewhere.lua:7")
      assert.equal("somewhere.lua:7", P.source)
      assert.equal(P, policy.validate(P, "elsewhere:1"))
      local ok, err = pcall(policy.validate, { certificates = {}, concurrency = "x" }, "somewhere.lua:7")
      assert.is_false(ok)
      assert.matches('^somewhere%.lua:7: policy field "concurrency"', err)
      assert.has_error(function() policy.validate({ certificates = {} }) end, "policy.validate: source must be a string")
    end)
  end)

  describe("errors", function()
    it("names a bad duration", function()
      local err = load_err("err_bad_duration.lua")
      assert.equal(DIR .. 'err_bad_duration.lua:6: policy field "renew_check_interval": bad duration "10 minutes" '
        .. '(use seconds or "90s", "10m", "1h", "7d")', err)
    end)

    it("names a bad DNS name by its position", function()
      local err = load_err("err_bad_name.lua")
      assert.matches('^' .. (DIR .. 'err_bad_name.lua:4: policy field "certificates[2][1]": '
        .. '"exa_mple.com" is not a valid DNS name: '):gsub("%p", "%%%0") .. ".+", err)
    end)

    it("refuses a name in two certificates, naming both", function()
      local err = load_err("err_duplicate_name.lua")
      assert.equal(DIR .. 'err_duplicate_name.lua:4: policy field "certificates[2]": name "example.com" '
        .. 'is also in certificates[1] (a name belongs to one certificate)', err)
    end)

    it("requires certificates", function()
      local err = load_err("err_no_certificates.lua")
      assert.matches('err_no_certificates.lua:3: policy field "certificates" is required', err, 1, true)
    end)

    it("reports a file that does not return a policy, a syntax error, a missing file", function()
      local err, code = load_err("err_not_a_policy.lua")
      assert.equal("policy", code)
      assert.equal(DIR .. "err_not_a_policy.lua: the policy file must return certmaint.policy { ... } (it returned nil)", err)
      err, code = load_err("err_syntax.lua")
      assert.equal("load", code)
      assert.matches("err_syntax.lua:4:", err, 1, true)
      err, code = load_err("no_such_policy.lua")
      assert.equal("load", code)
      assert.matches("no_such_policy.lua", err, 1, true)
    end)

    it("refuses a non-table spec and positional values", function()
      local ok, err = pcall(policy, "example.com")
      assert.is_false(ok)
      assert.matches("certmaint.policy expects a table", err, 1, true)
      ok, err = pcall(policy, { "example.com" })
      assert.is_false(ok)
      assert.matches("policy has an unexpected positional value [1]", err, 1, true)
    end)

    it("suggests only close names", function()
      local ok, err = pcall(policy, { certificates = {}, on_renewd = print })
      assert.is_false(ok)
      assert.matches('policy field "on_renewd" is unknown (did you mean "on_renewed"?)', err, 1, true)
      ok, err = pcall(policy, { certificates = {}, frobnicate = 1 })
      assert.is_false(ok)
      assert.matches('policy field "frobnicate" is unknown (known: allow_name, certificates, ', err, 1, true)
      assert.equal("certificates", policy.suggest("Certificates", { "certificates", "concurrency" }))
      assert.equal("renewal_window_ratio", policy.suggest("renew_windwo", { "renew_check_interval", "renewal_window_ratio" }))
      assert.is_nil(policy.suggest("xyz", { "storage", "issuer" }))
    end)

    -- every field's type error, naming the field, at the policy file's line
    local bad = {
      { "storage", 42, 'expected a storage object (with methods load, load_many, load_into_cache, store, delete, exists, list, stat, lock, try_lock, unlock, refresh_locks, commit, recover, describe), got number 42' },
      { "storage", { load = print }, 'a storage object has no method "load_many"' },
      { "issuer", "acme", 'expected an issuer object (with methods issue), got string "acme"' },
      { "certificates", "example.com", 'expected a list of certificates, e.g. { "example.com" }, got string "example.com"' },
      { "certificates", { x = "a.example" }, 'expected a list of certificates, found key string "x"' },
      { "renew_check_interval", true, 'bad duration: expected seconds or a string like "10m", got boolean' },
      { "renew_check_interval", 0, "0s is too short (at least 1s)" },
      { "ocsp_check_interval", "1 hour", 'bad duration "1 hour"' },
      { "clean_interval", -1, "bad duration -1 (must not be negative)" },
      { "renewal_window_ratio", 0, "expected a number between 0 and 1 (exclusive), e.g. 1/3, got number 0" },
      { "renewal_window_ratio", 1, "got number 1" },
      { "renewal_window_ratio", "1/3", 'got string "1/3"' },
      { "clean", "yes", 'expected a table, got string "yes"' },
      { "key_type", "ed25519", '"ed25519" is not one of "p256", "p384", "rsa2048", "rsa4096"' },
      { "key_type", 256, 'expected one of "p256", "p384", "rsa2048", "rsa4096", got number 256' },
      { "concurrency", 0, "expected an integer from 1 to 1000, got number 0" },
      { "concurrency", 1.5, "got number 1.5" },
      { "concurrency", 1001, "got number 1001" },
      { "log", "json", 'expected a table, got string "json"' },
      { "needs_renewal", true, "expected a function, got boolean true" },
      { "on_revoked", "renew", 'expected a function, got string "renew"' },
      { "allow_name", {}, "expected a function, got table" },
      { "on_tick", 1, "expected a function, got number 1" },
      { "on_renewed", "deploy", 'expected a function, got string "deploy"' },
      { "on_error", false, "expected a function, got boolean false" },
    }
    for _, case in ipairs(bad) do
      local field, value, msg = case[1], case[2], case[3]
      it("names field " .. field .. " (" .. tostring(value) .. ")", function()
        local function check(err)
          assert.truthy(err:find(string.format('policy field %q: ', field), 1, true), err)
          assert.truthy(err:find(msg, 1, true), err)
        end
        -- loadfile: the call is a statement, the frame is on the stack
        local chunk = assert(loadfile(DIR .. "err_field.lua"))
        local ok, err = pcall(chunk, field, value)
        assert.is_false(ok)
        local prefix = DIR .. "err_field.lua:" .. line_of(DIR .. "err_field.lua", "the reported line") .. ": "
        assert.equal(prefix, err:sub(1, #prefix))
        check(err)
        -- policy.load: `return certmaint.policy(spec)`, a tail call
        err = load_err("err_field_tail.lua", env_with(field, value))
        prefix = DIR .. "err_field_tail.lua:6: "
        assert.equal(prefix, err:sub(1, #prefix))
        check(err)
      end)
    end

    local sub = {
      { { clean = { ocsp_staples = "yes" } }, 'policy field "clean.ocsp_staples": expected true or false, got string "yes"' },
      { { clean = { expired_cert_grace_period = "1 day" } }, 'policy field "clean.expired_cert_grace_period": bad duration "1 day"' },
      { { clean = { expired_cert_grace = 5 } }, 'policy field "clean.expired_cert_grace" is unknown (did you mean "expired_cert_grace_period"?)' },
      { { log = { format = "xml" } }, 'policy field "log.format": "xml" is not one of "text", "json"' },
      { { log = { levle = "info" } }, 'policy field "log.levle" is unknown (did you mean "level"?)' },
      { { log = { level = "verbose" } }, 'policy field "log.level": "verbose" is not one of "debug", "info", "warn", "error"' },
      { { certificates = { { names = { "a.example" }, keytype = "p256" } } }, 'policy field "certificates[1].keytype" is unknown (did you mean "key_type"?)' },
      { { certificates = { { names = { "a.example" }, key_type = "p521" } } }, 'policy field "certificates[1].key_type": "p521" is not one of' },
      { { certificates = { { names = { "a.example" }, on_demand = "yes" } } }, 'policy field "certificates[1].on_demand": expected true or false' },
      { { certificates = { { names = "a.example" } } }, 'policy field "certificates[1].names": expected a list of names, got string "a.example"' },
      { { certificates = { { names = {} } } }, 'policy field "certificates[1]" has no names (a certificate needs at least one)' },
      { { certificates = { {} } }, 'policy field "certificates[1]" has no names' },
      { { certificates = { "a.example", { "b.example", 42 } } }, 'policy field "certificates[2][2]": expected a DNS name (string), got number 42' },
      { { certificates = { { names = { "a.example", "b_c.example" } } } }, 'policy field "certificates[1].names[2]": "b_c.example" is not a valid DNS name: ' },
      { { certificates = { true } }, 'policy field "certificates[1]": expected a name, a list of names or { names = {...} }, got boolean true' },
      { { certificates = { { "a.example", names = { "b.example" } } } }, 'policy field "certificates[1]" has an unexpected positional value [1]' },
    }
    for i, case in ipairs(sub) do
      it("names sub-field errors (" .. i .. ")", function()
        local spec = case[1]
        spec.certificates = spec.certificates or {}
        local ok, err = pcall(policy, spec)
        assert.is_false(ok)
        assert.truthy(err:find(case[2], 1, true), err)
        assert.equal(THIS .. ":", err:sub(1, #THIS + 1))
      end)
    end
  end)

  describe("certificate names", function()
    it("are normalised: case, trailing dot, IDN", function()
      local P = policy { certificates = { "WWW.Example.COM.", { "bücher.example" } } }
      assert.same({ "www.example.com" }, P.certificates[1].names)
      assert.same({ "xn--bcher-kva.example" }, P.certificates[2].names)
    end)

    it("are deduplicated inside an entry, the first staying primary", function()
      local P = policy { certificates = { { "b.example", "a.example", "B.EXAMPLE", "a.example." } } }
      assert.same({ "b.example", "a.example" }, P.certificates[1].names)
    end)

    it("are refused when invalid", function()
      for _, name in ipairs { "", "exa mple.com", "a..b", "*.*.example.com", "foo.*.example.com", string.rep("a", 64) .. ".com" } do
        local ok, err = pcall(policy, { certificates = { name } })
        assert.is_false(ok, name)
        assert.truthy(err:find('policy field "certificates[1]": ' .. string.format("%q", name) .. " is not a valid DNS name", 1, true), err)
      end
    end)

    it("may not appear in two entries", function()
      local ok, err = pcall(policy, { certificates = { { "a.example", "b.example" }, { names = { "c.example", "B.example." } } } })
      assert.is_false(ok)
      assert.truthy(err:find('"certificates[2]": name "b.example" is also in certificates[1]', 1, true), err)
    end)

    it("inherit the policy's key_type unless they set their own", function()
      local P = policy { key_type = "rsa4096", certificates = { "a.example", { names = { "b.example" }, key_type = "p256" } } }
      assert.equal("rsa4096", P.certificates[1].key_type)
      assert.equal("p256", P.certificates[2].key_type)
    end)
  end)

  describe("schema", function()
    it("takes a new field in one line", function()
      policy.FIELDS.test_only_interval = { kind = "duration", default = "2m" }
      local ok, P = pcall(policy, { certificates = {} })
      local ok2, P2 = pcall(policy, { certificates = {}, test_only_interval = "3m" })
      policy.FIELDS.test_only_interval = nil
      assert.is_true(ok)
      assert.equal(120, P.test_only_interval)
      assert.is_true(ok2)
      assert.equal(180, P2.test_only_interval)
    end)

    it("gives certmaint.renewal its options", function()
      assert.same({ check_interval = 600, explicit_ratio = false }, policy.renewal_opts(policy { certificates = {} }))
      assert.same({ ratio = 0.5, check_interval = 60, explicit_ratio = true },
        policy.renewal_opts(policy { certificates = {}, renewal_window_ratio = 0.5, renew_check_interval = "1m" }))
    end)
  end)
end)
