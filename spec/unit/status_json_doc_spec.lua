-- status --json is documented field by field (issue 13): every key it emits,
-- nested ones too ("ocsp.status", "deploy[].target"), has an entry in the man
-- page's STATUS JSON section and a row in the README's table, and neither
-- lists a key the command does not emit, so the docs cannot drift from it.
-- The rows come from engine:status_json, what `certmaint status --json`
-- writes, over a store with every kind of row: a stapled certificate with a
-- deploy target, and one whose obtain failed (last_error, attempts,
-- next_attempt).
local certmaint = require "certmaint"
local testing = require "certmaint.testing"
local core = require "certmaint.core"

local OCSP_URL = "http://127.0.0.1:1/ocsp" -- answered in-process by testing.engine

local root = os.getenv("CERTMAINT_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- Every key path of a decoded JSON value: objects add ".key", arrays of
-- objects "[]" (their elements' keys are one set).
local function key_paths(v, prefix, out)
  if type(v) ~= "table" or v == core.json_null then return out end
  if v[1] ~= nil then
    for _, item in ipairs(v) do
      if type(item) == "table" then key_paths(item, prefix .. "[]", out) end
    end
    return out
  end
  for k, sub in pairs(v) do
    local path = (prefix == "") and k or (prefix .. "." .. k)
    out[path] = true
    key_paths(sub, path, out)
  end
  return out
end

-- The fields the man page's STATUS JSON section describes (.TP / .B FIELD).
local function man_fields()
  local text = read(root .. "/man/certmaint.1")
  local section = assert(text:match("\n%.SH STATUS JSON\n(.-)\n%.SH "), "man/certmaint.1 has no STATUS JSON section")
  local out = {}
  for field in section:gmatch("\n%.TP\n%.B ([%w_%.%[%]]+)\n") do out[field] = true end
  return out
end

-- The fields of the README's table under "### `status --json`, field by field".
local function readme_fields()
  local text = read(root .. "/README.md")
  local section = assert(text:match("\n### `status %-%-json`, field by field\n(.-)\n#"),
    "README.md has no status --json field table")
  local out = {}
  for field in section:gmatch("\n| `([%w_%.%[%]]+)` |") do out[field] = true end
  return out
end

local function sorted(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function missing(from, set)
  local out = {}
  for _, k in ipairs(sorted(from)) do if not set[k] then out[#out + 1] = k end end
  return out
end

describe("status --json's documentation", function()
  local emitted

  setup(function()
    local clock = testing.clock(testing.EPOCH)
    local ca = testing.ca()
    local logs = testing.capture_logs()
    local issuer = testing.issuer { ca = ca, lifetime = "30d", ocsp_url = OCSP_URL, fail = 1 }
    local e = testing.engine(certmaint.policy {
      certificates = { "failing.test", "ok.test" },
      issuer = issuer,
      on_renewed = function() end,
    }, { clock = clock })
    e:tick("ocsp")
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    assert(e.engine:status_json(clock:now(), f))
    f:close()
    local rows = assert(core.json_decode(read(path)))
    os.remove(path)
    testing.reset()
    logs()
    -- the fixture has what the table documents: a staple, a deploy, a failure
    assert.equal(2, #rows)
    local by_name = {}
    for _, r in ipairs(rows) do by_name[r.names[1]] = r end
    assert.is_string(by_name["failing.test"].last_error)
    assert.is_string(by_name["failing.test"].next_attempt)
    assert.equal("good", by_name["ok.test"].ocsp.status)
    assert.equal("on_renewed", by_name["ok.test"].deploy[1].target)
    emitted = {}
    for _, r in ipairs(rows) do key_paths(r, "", emitted) end
  end)

  it("finds the nested fields too", function()
    assert.is_true(emitted["ocsp.next_update"])
    assert.is_true(emitted["deploy[].next_attempt"])
    assert.is_true(emitted["names"])
  end)

  it("man/certmaint.1 describes every field emitted, and no other", function()
    local man = man_fields()
    assert.same({}, missing(emitted, man))
    assert.same({}, missing(man, emitted))
  end)

  it("README.md's table has every field emitted, and no other", function()
    local readme = readme_fields()
    assert.same({}, missing(emitted, readme))
    assert.same({}, missing(readme, emitted))
  end)
end)
