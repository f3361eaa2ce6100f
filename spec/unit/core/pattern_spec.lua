-- core/lua/lpattern.c: our bounded pattern functions behave exactly as the stock
-- string library (results and error messages), and the bound and the watchdog stop them.
local core = require "certmaint.core"

local OURS = { find = core.pattern_find, match = core.pattern_match, gmatch = core.pattern_gmatch,
  gsub = core.pattern_gsub }
local STOCK = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }

-- A printable record of one call: "ok" and its values, or "error" and the message.  The
-- functions are called as the upvalue `f` so argument errors name the same function.
local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" then return string.format("%.17g(float)", v) end
  return tostring(v)
end

local function record(ok, ...)
  local out = { ok and "ok" or "error" }
  for i = 1, select("#", ...) do out[#out + 1] = show((select(i, ...))) end
  return table.concat(out, " ")
end

local function call(lib, name, ...)
  local f = lib[name]
  if name == "gmatch" then
    local args = table.pack(...)
    return record(pcall(function()
      local it = f(table.unpack(args, 1, args.n))
      local seen = {}
      for _ = 1, 40 do
        local r = table.pack(it())
        if r[1] == nil then break end
        seen[#seen + 1] = record(true, table.unpack(r, 1, r.n))
      end
      return table.concat(seen, " ; ")
    end))
  end
  local args = table.pack(...)
  return record(pcall(function() return f(table.unpack(args, 1, args.n)) end))
end

local function same(name, ...)
  local want, got = call(STOCK, name, ...), call(OURS, name, ...)
  return want == got, want, got
end

local function describe_args(name, ...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = show((select(i, ...))) end
  return name .. "(" .. table.concat(parts, ", ") .. ")"
end

local function check(name, ...)
  local ok, want, got = same(name, ...)
  assert(ok, describe_args(name, ...) .. "\n  stock: " .. want .. "\n  ours:  " .. got)
end

-- replacements for gsub: strings, tables, functions
local REPL_TABLE = { a = "A", b = false, c = 7, ["("] = 1.5, [1] = "one", [2] = true, ab = "AB" }
local REPL_META = setmetatable({}, { __index = function(_, k) return type(k) == "string" and k:upper() end })
local function repl_count(...) return select("#", ...) .. ":" .. table.concat({ ... }, "|") end
local function repl_keep() return nil end
local function repl_false() return false end
local function repl_number(x) return type(x) == "string" and #x or x end
local function repl_bad() return {} end

describe("core.pattern_*: the same as the stock string library", function()
  it("edge cases, by hand", function()
    local subjects = { "", "a", "abc", "hello world", "key=key", "f(a(b)c)d", "THE (quick) fox",
      "a]b", "x-y", "\0a\0", "aaa", "  x  " }
    local patterns = { "", "^", "$", "^$", "a", "^a", "a$", "^abc$", ".", ".-", ".*", "a*", "a+", "a-",
      "a?", "%a+", "%A+", "(%a+)=%1", "%f[%w]%w+", "%f[%W]", "%f[%a]", "%b()", "%b)(", "%bxx", "[%]]",
      "[^%a-]", "[a-]", "[]]", "[^]]", "[a-c]+", "[%a-z]", "[a-%]]", "()", "()a()", "(a)(b)(c)",
      "((a)(b))", "(a*(.)%w(%s*))", "%%", "%.", "a.-b", "^(.-)%s*$", "%s*(.-)%s*$", "%d+", "%x+",
      "%p", "%c", "%g+", "%l%u", "%z", "%Q", "[%w_]+", "[^%s]+", "%$", "a$b", "$a", "^^", "a^",
      "%1", "%0", "(a)%2", "(a%1)", "(a", "a)", "a).", "%", "a%", "[a", "[a%", "[", "[^", "%b", "%ba",
      "%f", "%fa", "%f[a", "(()", ("()"):rep(32), ("()"):rep(33), "*", "+a", "-", "?", "a**", "\0",
      "%\0", "[\0]", "[%z]" }
    for _, s in ipairs(subjects) do
      for _, p in ipairs(patterns) do
        check("find", s, p)
        check("match", s, p)
        check("gmatch", s, p)
        check("gsub", s, p, "<%0>")
        check("find", s, p, 1, true)
      end
    end
    for _, init in ipairs { 0, 1, 2, 3, 4, 5, 100, -1, -2, -3, -100, math.mininteger, math.maxinteger } do
      for _, s in ipairs { "", "abc", "aXbXc" } do
        for _, p in ipairs { "", "X", "^X", "%a", "()", "^", "b" } do
          check("find", s, p, init)
          check("find", s, p, init, true)
          check("match", s, p, init)
          check("gmatch", s, p, init)
        end
      end
    end
    -- gsub: replacement strings, tables, functions, n limits
    local repls = { "%0", "%1", "%2", "<%1|%2>", "%%", "%%%1%%", "x%", "%x", "%a", "", "-", 42, 1.5,
      REPL_TABLE, REPL_META, repl_count, repl_keep, repl_false, repl_number, repl_bad, {} }
    for _, s in ipairs { "", "abc", "a(b)c", "hello world", "aaa" } do
      for _, p in ipairs { "", "a", "%w", "(%w)", "(%w)(%w)", "()", "(a)()", "^a", "^(%w)", "%w*", "x*",
        "(", "%", "[" } do
        for _, r in ipairs(repls) do
          check("gsub", s, p, r)
          for _, n in ipairs { 0, 1, 2, -1, 100 } do check("gsub", s, p, r, n) end
        end
      end
    end
    -- arguments: missing, wrong types, numbers for strings
    check("find", nil, "a")
    check("find", "a")
    check("find", 123, 2)
    check("find", "a", "a", "x")
    check("find", "a", "a", 1.5)
    check("find", "a", "a", "2")
    check("match", 12.5, "%d")
    check("gmatch", "abc", "b", "x")
    check("gmatch", 1234, "%d%d")
    check("gsub", "abc", "b", true)
    check("gsub", "abc", "b", nil)
    check("gsub", "abc", "b", true, "x")
    check("gsub", "abc", "b", "x", 1.5)
    check("gsub", "abc", "b", "x", "2")
    check("gsub", 125, 2, 9)
    check("find", "a", {})
    -- the nesting bound ("pattern too complex") is where the stock library has it
    for _, n in ipairs { 1, 198, 199, 200, 201, 300 } do
      for _, p in ipairs { ("a*"):rep(n), ("a*"):rep(n) .. "b", ("a?"):rep(n) .. "b", ("a-"):rep(n),
        ("a-"):rep(n) .. "$", ("(a)"):rep(n // 2), ("a+"):rep(n) } do
        for _, s in ipairs { "", "a", "aa", "b" } do check("find", s, p) end
      end
    end
  end)

  it("30 000 generated calls: random patterns and subjects (fixed seed)", function()
    math.randomseed(20261202)
    local function pick(t) return t[math.random(#t)] end
    local ALPHABET = { "a", "a", "b", "b", "c", "(", ")", " ", "1", "-", "%", ".", "]", "[", "^", "$", "A", "\0" }
    local max_len = 10
    local function subject()
      local t = {}
      for i = 1, math.random(0, max_len) do t[i] = pick(ALPHABET) end
      return table.concat(t)
    end
    local LITERALS = { "a", "b", "c", " ", "1", "A", "%(", "%)", "%%", "%.", "%[", "%]", "%-", "%^", "%$", "\0", "^" }
    local CLASSES = { ".", "%a", "%A", "%d", "%D", "%s", "%S", "%w", "%W", "%p", "%P", "%l", "%u", "%x",
      "%c", "%g", "%G", "%U", "%z", "%Z" }
    local function set()
      local t = { "[" }
      if math.random() < 0.3 then t[#t + 1] = "^" end
      for _ = 1, math.random(1, 3) do
        local r = math.random(5)
        if r == 1 then t[#t + 1] = pick { "a-c", "a-b", "0-9", "(-)", "A-Z", "b-a" }
        elseif r == 2 then t[#t + 1] = pick { "%a", "%d", "%s", "%w", "%W", "%]", "%-", "%%" }
        elseif r == 3 then t[#t + 1] = pick { "-", "]", "^" }
        else t[#t + 1] = pick { "a", "b", "c", "(", ")", " ", "1", "." } end
      end
      if math.random() < 0.03 then return table.concat(t) end -- malformed: no ']'
      t[#t + 1] = "]"
      return table.concat(t)
    end
    local function single()
      local r = math.random(10)
      if r <= 4 then return pick(LITERALS) elseif r <= 7 then return pick(CLASSES) else return set() end
    end
    local item
    local function sequence(depth, n)
      local t = {}
      for i = 1, n do t[i] = item(depth) end
      return table.concat(t)
    end
    function item(depth)
      local r = math.random(100)
      if r <= 50 then
        local q = math.random(10)
        return single() .. (q <= 4 and "" or pick { "*", "+", "-", "?", "*", "-" })
      elseif r <= 58 and depth < 3 then return "(" .. sequence(depth + 1, math.random(0, 2)) .. ")"
      elseif r <= 62 then return "()"
      elseif r <= 68 then return pick { "%b()", "%bab", "%b))", "%b[]" }
      elseif r <= 74 then return "%f" .. set()
      elseif r <= 80 then return "%" .. math.random(1, 3)
      elseif r <= 82 then return pick { "%", "[", "%b", "%ba", "%f", "%fa", ")", "(", "%0" } -- malformed
      else return single() end
    end
    local function pattern()
      local p = sequence(0, math.random(0, 5))
      if math.random() < 0.2 then p = "^" .. p end
      if math.random() < 0.2 then p = p .. "$" end
      return p
    end
    local REPLS = { "%0", "%1", "<%1%2>", "%%", "x", "%3", "[%0]", REPL_TABLE, REPL_META, repl_count, repl_keep,
      repl_false, repl_number }
    local INITS = { nil, 1, 2, 3, 0, -1, -3, 11, 12, -20 }
    local cases, mismatches = 0, {}
    for round = 1, 7500 do
      if round > 6000 then max_len = 40 end -- and some longer subjects
      local s, p = subject(), pattern()
      local init = INITS[math.random(#INITS + 1)]
      for _, c in ipairs {
        { "find", s, p, init }, { "match", s, p, init }, { "gmatch", s, p, init },
        { "gsub", s, p, pick(REPLS), math.random() < 0.3 and math.random(-1, 3) or nil },
      } do
        cases = cases + 1
        local ok, want, got = same(table.unpack(c, 1, 5))
        if not ok and #mismatches < 10 then
          mismatches[#mismatches + 1] = describe_args(table.unpack(c, 1, 5)) .. "\n  stock: " .. want .. "\n  ours:  " .. got
        end
      end
    end
    assert.equal(30000, cases)
    assert(#mismatches == 0, table.concat(mismatches, "\n"))
  end)
end)

describe("core.pattern_*: the work bound and the watchdog", function()
  local SUBJECT, PATHOLOGICAL = ("a"):rep(3e4), ("a*"):rep(30) .. "b"

  it("a pathological pattern fails with the bound quickly, in every function", function()
    for name, fn in pairs {
      find = function() return core.pattern_find(SUBJECT, PATHOLOGICAL) end,
      match = function() return core.pattern_match(SUBJECT, PATHOLOGICAL) end,
      gsub = function() return core.pattern_gsub(SUBJECT, PATHOLOGICAL, "") end,
      gmatch = function() for _ in core.pattern_gmatch(SUBJECT, PATHOLOGICAL) do end end,
    } do
      -- the bound's own error (not a time check: timing belongs to bench/pattern.lua)
      local ok, err = pcall(fn)
      assert.is_false(ok, name)
      assert.matches("pattern too complex for this subject: more than 20 million matching steps", err, 1, true)
    end
    assert.equal(20000000, core.PATTERN_STEPS_MAX)
  end)

  it("each call of a gmatch iterator has a bound of its own", function()
    -- each call fails at the 70 positions of a run of "a"s (about a million steps) before it
    -- finds the "c": 30 calls, 30 million steps in all, which one gsub call may not take
    local subject, pattern = (("a"):rep(70) .. "bc"):rep(30), ("a*"):rep(3) .. "c"
    local n = 0
    for c in core.pattern_gmatch(subject, pattern) do
      assert.equal("c", c)
      n = n + 1
    end
    assert.equal(30, n)
    local ok, err = pcall(core.pattern_gsub, subject, pattern, "")
    assert.is_false(ok)
    assert.matches("pattern too complex for this subject", err, 1, true)
    -- %b scans are counted: 40 000 of them over the rest of a subject of 40 000 '('
    ok, err = pcall(core.pattern_gsub, ("("):rep(4e4), "%b()", "")
    assert.is_false(ok)
    assert.matches("pattern too complex for this subject", err, 1, true)
  end)

  it("a time limit ends a long match from inside the matcher (no count hook runs in C)", function()
    -- "timeout", not the step bound's error: the watchdog ended it before the 20 million steps
    local ok, err, code = core.watch_call({ seconds = 0.01 }, core.pattern_find, SUBJECT, PATHOLOGICAL)
    assert.is_false(ok)
    assert.equal("timeout", code)
    assert.matches("exceeded its time limit of 0.01s", err, 1, true)
  end)
end)
