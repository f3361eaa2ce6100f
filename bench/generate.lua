-- bench/generate.lua - write a benchmark storage tree with certmaint.benchgen
-- (bench/generate.c): N certificates in certmagic's file layout, their keys,
-- metadata and OCSP staples, and the test CA under DIR/bench-ca/.
--
--   LUA_CPATH="build/lua/?.so;;" lua5.4 bench/generate.lua DIR N [name=value ...]
--
-- name=value pairs are generate()'s options: due, expired, stale_staples
-- (fractions), seed, issuer_key, threads, now (numbers are converted), e.g.
--   lua5.4 bench/generate.lua /work/bench-tree-100k 100000 threads=2
-- Prints progress to stderr and one summary line to stdout; exits 1 on failure
-- (DIR must not hold certificates/ yet).
local benchgen = require "certmaint.benchgen"

local dir, n = arg[1], math.tointeger(tonumber(arg[2] or ""))
if not dir or not n then
  io.stderr:write("usage: lua5.4 bench/generate.lua DIR N [name=value ...]\n")
  os.exit(2)
end
local opts = { dir = dir, n = n, progress = true }
for i = 3, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k then
    io.stderr:write("generate.lua: expected name=value, got " .. arg[i] .. "\n")
    os.exit(2)
  end
  local num = tonumber(v)
  opts[k] = num and (math.tointeger(num) or num) or v
end
local s, err, code = benchgen.generate(opts)
if not s then
  io.stderr:write(string.format("generate.lua: %s (%s)\n", err, code))
  os.exit(1)
end
print(string.format("dir=%s n=%d due=%d expired=%d stale_staples=%d issuer_key=%s now=%d seconds=%.2f bytes=%d",
  s.dir, s.n, s.due, s.expired, s.stale_staples, s.issuer_key, s.now, s.seconds, s.bytes))
