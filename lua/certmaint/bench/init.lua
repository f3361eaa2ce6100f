--- certmaint.bench: `certmaint-bench`, timing the daemon's own code paths on a
-- storage tree in certmagic's file layout (bench/README.md).
--
--   certmaint-bench --store DIR [--bench load,scan,...]
--   certmaint-bench --generate N --store DIR [--due F] [--expired F] [--stale F] [--seed S]
--
-- Every figure runs what the daemon runs (certmaint.policy, engine.new,
-- engine:load_all, engine:tick, the clean pass, the OCSP pass), never a
-- copy, and prints one line
--   RESULT <figure> <N> <seconds> <per_item_us> <peak_rss_MiB>
-- where peak RSS is VmHWM during the figure (reset before it through
-- /proc/self/clear_refs). Figures that delete (clean, clean_ocsp) work on a
-- hard-linked copy of the tree (every storage write is a rename, so the
-- original's files are never touched), made and removed untimed.

local M = {}

M.FIGURES = { "load", "load_staples", "scan", "scan_due", "clean", "clean_ocsp", "ocsp", "ocsp_noverify" }
local figures = require "certmaint.bench.figures"
local KNOWN = {}
for _, f in ipairs(M.FIGURES) do KNOWN[f] = true end

local USAGE = [[
usage: certmaint-bench --store DIR [--bench FIGURES] [--warm] [--log-level error|warn|info]
       certmaint-bench --generate N --store DIR [--due F] [--expired F] [--stale F] [--seed S]
                       [--issuer-key KEY] [--ca-key-type p256|p384|rsa2048] [--threads T]
FIGURES: a comma-separated list of ]] .. table.concat(M.FIGURES, ",") .. [[ (default: all)
Each figure prints: RESULT <figure> <N> <seconds> <per_item_us> <peak_rss_MiB>
--warm reads every file of the tree (untimed) before each figure, so it runs on a
warm page cache whatever evicted the tree meanwhile (see bench/README.md)
]]

local function say(fmt, ...) io.stderr:write(("certmaint-bench: " .. fmt .. "\n"):format(...)) end

-- ---- the CLI --------------------------------------------------------------------

local function parse_args(args)
  local o = {}
  local i = 1
  local function value(flag)
    i = i + 1
    local v = args[i]
    if v == nil then error({ usage = flag .. " needs a value" }) end
    return v
  end
  while i <= #args do
    local a = args[i]
    if a == "--store" then o.store = value(a)
    elseif a == "--bench" then o.bench = value(a)
    elseif a == "--issuer-key" then o.issuer_key = value(a)
    elseif a == "--generate" then o.generate = value(a)
    elseif a == "--due" then o.due = value(a)
    elseif a == "--expired" then o.expired = value(a)
    elseif a == "--stale" then o.stale = value(a)
    elseif a == "--seed" then o.seed = value(a)
    elseif a == "--threads" then o.threads = value(a)
    elseif a == "--ca-key-type" then o.ca_key_type = value(a)
    elseif a == "--log-level" then o.log_level = value(a)
    elseif a == "--warm" then o.warm = true
    elseif a == "-h" or a == "--help" then o.help = true
    else error({ usage = "unknown argument '" .. a .. "'" }) end
    i = i + 1
  end
  return o
end

local function number_arg(v, flag, lo, hi, integer)
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or (integer and math.type(math.tointeger(n)) ~= "integer") or n < lo or (hi and n > hi) then
    error({ usage = ("%s must be %s%s, got '%s'"):format(flag, integer and "a whole number >= " or "a number >= ",
      tostring(lo) .. (hi and (" and <= " .. tostring(hi)) or ""), v) })
  end
  return integer and math.tointeger(n) or n
end

local function figure_list(text)
  if not text then return M.FIGURES end
  local list, seen = {}, {}
  for f in text:gmatch("[^,%s]+") do
    if not KNOWN[f] then
      error({ usage = "unknown figure '" .. f .. "' (figures: " .. table.concat(M.FIGURES, ",") .. ")" })
    end
    if not seen[f] then list[#list + 1], seen[f] = f, true end
  end
  if #list == 0 then error({ usage = "--bench needs at least one figure" }) end
  return list
end

--- Write a tree of opts.n certificates at dir (bench/generate.c, preloaded
-- as certmaint.benchgen in certmaint-bench). -> exit status
function M.generate(dir, opts)
  local ok, gen = pcall(require, "certmaint.benchgen")
  if not ok then say("the generator is not in this binary (certmaint.benchgen): %s", gen) return 1 end
  opts.dir, opts.progress = dir, true
  local summary, err = gen.generate(opts)
  if not summary then say("%s", err) return 1 end
  say("wrote %d certificates (%d due, %d expired, %d stale staples) under %s/certificates/%s in %.1f s",
    summary.n, summary.due, summary.expired, summary.stale_staples, dir, summary.issuer_key, summary.seconds)
  return 0
end

function M.main(args)
  local ok, o = pcall(parse_args, args)
  if not ok then
    if type(o) == "table" and o.usage then
      io.stderr:write("certmaint-bench: " .. o.usage .. "\n" .. USAGE)
      return 2
    end
    error(o, 0)
  end
  if o.help then io.stdout:write(USAGE) return 0 end
  if not o.store then io.stderr:write("certmaint-bench: --store DIR is required\n" .. USAGE) return 2 end
  local okr, code = pcall(function()
    if o.generate then
      return M.generate(o.store, {
        n = number_arg(o.generate, "--generate", 1, nil, true),
        due = number_arg(o.due, "--due", 0, 1), expired = number_arg(o.expired, "--expired", 0, 1),
        stale_staples = number_arg(o.stale, "--stale", 0, 1), seed = number_arg(o.seed, "--seed", 0, nil, true),
        threads = number_arg(o.threads, "--threads", 1, 64, true), issuer_key = o.issuer_key,
        ca_key_type = o.ca_key_type,
      })
    end
    local list = figure_list(o.bench)
    local run, err = figures.new(o.store, { log_level = o.log_level, warm = o.warm })
    if not run then say("%s", err) return 1 end
    return run:run(list)
  end)
  if not okr then
    if type(code) == "table" and code.usage then
      io.stderr:write("certmaint-bench: " .. code.usage .. "\n" .. USAGE)
      return 2
    end
    error(code, 0)
  end
  return code
end

return M
