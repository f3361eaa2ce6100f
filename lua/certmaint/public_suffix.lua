--- certmaint.public_suffix: the registered domain of a name, for the order
-- budget's per-domain limit (Let's Encrypt counts certificates per
-- "registered domain": one label below a public suffix).
--
--   local psl = public_suffix.load("/usr/share/publicsuffix/public_suffix_list.dat")
--   psl:registered_domain("a.b.example.co.uk")  --> "example.co.uk"
--
-- The list is the Mozilla Public Suffix List as Debian's `publicsuffix`
-- package ships it (no download: certmaint runs without the internet). The
-- algorithm is the list's own (publicsuffix.org "Formal algorithm"): the
-- matching rule with the most labels wins, an exception rule (!) beats it and
-- is itself one label shorter, a wildcard (*) matches any one label, and no
-- match means the rule "*" (the last label is the suffix).
--
-- Without a list (file absent, or `false`), the fallback is the last two
-- labels: right for example.com, wrong for example.co.uk (which then shares
-- one budget with every other *.co.uk name: conservative, never more orders).
local M = {}

M.DEBIAN_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"
M.MAX_LIST_BYTES = 16 * 1024 * 1024 -- the list is ~230 KB; anything far larger is not it

local List = {}
List.__index = List

--- Parse the text of a public suffix list: rules one a line, `//` comments,
-- only the first whitespace-separated word of a line counts. Returns a list
-- object | nil, err.
function M.parse(text, source)
  if type(text) ~= "string" then error("public_suffix.parse: text must be a string", 2) end
  local rules, exceptions, n = {}, {}, 0
  for line in text:gmatch("[^\n]+") do
    local rule = line:match("^%s*(%S+)")
    if rule and rule:sub(1, 2) ~= "//" then
      rule = rule:lower()
      if rule:sub(1, 1) == "!" then
        exceptions[rule:sub(2)] = true
      else
        rules[rule] = true
      end
      n = n + 1
    end
  end
  if n == 0 then return nil, (source or "public suffix list") .. ": no rules" end
  return setmetatable({ rules = rules, exceptions = exceptions, count = n, source = source }, List)
end

--- Read and parse a list file. Returns a list object | nil, err.
function M.load(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read(M.MAX_LIST_BYTES + 1)
  f:close()
  if not text then return nil, path .. ": empty" end
  if #text > M.MAX_LIST_BYTES then return nil, path .. ": larger than " .. M.MAX_LIST_BYTES .. " bytes" end
  return M.parse(text, path)
end

local function labels_of(name)
  local labels = {}
  for l in name:gmatch("[^.]+") do labels[#labels + 1] = l end
  return labels
end

local function join(labels, from)
  return table.concat(labels, ".", from)
end

local function is_ip(name)
  return name:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or name:find(":", 1, true) ~= nil
end

--- The number of labels of the public suffix of `labels` under this list.
function List:suffix_labels(labels)
  local n = #labels
  local best = 1 -- the implicit rule "*"
  for k = 1, n do
    local cand = join(labels, n - k + 1) -- the last k labels
    if self.exceptions[cand] then return k - 1 end -- an exception wins outright
    if self.rules[cand] then best = math.max(best, k) end
    if k >= 2 and self.rules["*." .. join(labels, n - k + 2)] then best = math.max(best, k) end
  end
  return best
end

--- The registered domain of a (normalised) name: the public suffix plus one
-- label. A wildcard's "*." is dropped first; an IP address is its own
-- domain; a name that is itself a public suffix is its own domain.
function List:registered_domain(name)
  return M.registered_domain(name, self)
end

--- registered_domain(name [, list]): with no list, the last two labels.
function M.registered_domain(name, list)
  if type(name) ~= "string" or name == "" then error("public_suffix.registered_domain: name must be a string", 2) end
  name = name:lower():gsub("%.$", ""):gsub("^%*%.", "")
  if is_ip(name) then return name end
  local labels = labels_of(name)
  local suffix = list and list:suffix_labels(labels) or 1
  local keep = suffix + 1
  if keep >= #labels then return name end
  return join(labels, #labels - keep + 1)
end

return M
