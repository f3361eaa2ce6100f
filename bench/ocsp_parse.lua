-- ocsp_parse.lua - what checking an OCSP response (and a CRL) costs, one core.
--
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua/?.so;;" lua5.4 bench/ocsp_parse.lua [N=10000]
--
-- For a P-256 and an RSA-2048 issuer: N leaves, one signed good response each
-- (core.ocsp_response_build), then per response, best of 3 rounds over all N:
--   parse+verify  core.ocsp_response_parse(der, leaf_pem, issuer_pem, now, skew): what the OCSP
--                 pass runs on every fetched or stored staple (decode, signature, CertID, times);
--   same, DER     with the certificates as DER (no PEM decoding of leaf and issuer);
--   parse only    core.ocsp_response_peek(der): decode, no verification;
--   request       core.ocsp_request(leaf_pem, issuer_pem).
--   batch         cache:verify_staples(ids, ders, {now, threads = 0 | 2, verify = true | false}):
--                 the same checks for every cached leaf, by batches of 4096, wall per response
--                 (threads = 0: all on the calling thread; 2: two worker threads);
--                 verify = false is parse-only (decode, CertID, times; no signature).
-- Then a CRL with N entries: core.crl_parse (verify, read, sort; 10 times), and crl:lookup per serial.
-- Wall microseconds and the main thread's CPU microseconds (/proc/thread-self/schedstat).
-- certmagic's figure for its parse+verify of a staple is 56 µs (the note in the plan).
-- Prints figures; never a test.
local core = require "certmaint.core"
local N = math.tointeger(tonumber(arg[1] or "10000")) or error("usage: ocsp_parse.lua [N]")

local function thread_cpu()
  local f = io.open("/proc/thread-self/schedstat")
  if not f then return os.clock() end
  local ns = f:read("n")
  f:close()
  return ns / 1e9
end

-- best of 3 rounds of fn(i) for i = 1..n: wall and cpu seconds per call
local function measure(n, fn)
  local best_w, best_c = math.huge, math.huge
  for _ = 1, 3 do
    collectgarbage()
    local t0, c0 = core.monotonic(), thread_cpu()
    for i = 1, n do fn(i) end
    local w, c = core.monotonic() - t0, thread_cpu() - c0
    if w < best_w then best_w = w end
    if c < best_c then best_c = c end
  end
  return best_w / n * 1e6, best_c / n * 1e6
end

local function report(what, n, fn)
  local w, c = measure(n, fn)
  io.stdout:write(string.format("  %-22s %8.2f us wall %8.2f us cpu  (%d calls)\n", what, w, c, n))
end

local now = math.floor(core.now())
for _, kt in ipairs { "p256", "rsa2048" } do
  local ca_key = assert(core.key_generate(kt))
  local ca = assert(core.cert_issue { subject_key = ca_key, issuer_key = ca_key, cn = "bench CA " .. kt,
    is_ca = true, not_before = now - 86400, not_after = now + 365 * 86400 })
  local ca_der = assert(core.cert_parse(ca)).der
  local leaf_key = assert(core.key_generate("p256"))
  local leaves, leaves_der, resps, serials = {}, {}, {}, {}
  local t0 = core.monotonic()
  for i = 1, N do
    local pem, serial = assert(core.cert_issue { subject_key = leaf_key, names = { ("l%d.bench.example"):format(i) },
      issuer_cert = ca, issuer_key = ca_key, not_before = now - 3600, not_after = now + 90 * 86400,
      ocsp_url = "http://127.0.0.1:1/" })
    leaves[i], serials[i] = pem, serial
    leaves_der[i] = assert(core.cert_parse(pem)).der
    resps[i] = assert(core.ocsp_response_build { issuer_cert = ca, issuer_key = ca_key, cert = pem,
      status = "good", this_update = now - 60, next_update = now + 7 * 86400 })
  end
  io.stdout:write(string.format("%s issuer: %d leaves and responses made in %.1f s; response %d bytes\n",
    kt, N, core.monotonic() - t0, #resps[1]))
  -- every response verifies before it is timed
  for i = 1, N do assert(core.ocsp_response_parse(resps[i], leaves[i], ca, now, 300)) end
  report("parse+verify (PEM)", N, function(i) core.ocsp_response_parse(resps[i], leaves[i], ca, now, 300) end)
  report("parse+verify (DER)", N, function(i) core.ocsp_response_parse(resps[i], leaves_der[i], ca_der, now, 300) end)
  report("parse only (peek)", N, function(i) core.ocsp_response_peek(resps[i]) end)
  report("request", N, function(i) core.ocsp_request(leaves[i], ca) end)

  local cache = core.cache_new()
  local ids = {}
  for i = 1, N do ids[i] = assert(cache:add(leaves[i] .. ca)) end
  local BATCH = 4096
  local chunks = {}
  for first = 1, N, BATCH do
    local ci, cd = {}, {}
    for i = first, math.min(N, first + BATCH - 1) do ci[#ci + 1], cd[#cd + 1] = ids[i], resps[i] end
    chunks[#chunks + 1] = { ci, cd }
  end
  for _, c in ipairs(chunks) do -- every response verifies in the batch too
    local r = cache:verify_staples(c[1], c[2], { now = now, threads = 2 })
    for i = 1, #c[1] do assert(r.ok[i] and r.status[i] == "good", r.error[i]) end
  end
  for _, mode in ipairs { { 0, true }, { 2, true }, { 0, false }, { 2, false } } do
    local threads, verify = mode[1], mode[2]
    local w, c = measure(1, function()
      for _, ch in ipairs(chunks) do cache:verify_staples(ch[1], ch[2], { now = now, threads = threads, verify = verify }) end
    end)
    io.stdout:write(string.format("  %-22s %8.2f us wall %8.2f us cpu  (%d responses, main thread cpu)\n",
      ("batch %s threads=%d"):format(verify and "verify" or "parse ", threads), w / N, c / N, N))
  end
  cache:close()

  local entries = {}
  for i = 1, N do entries[i] = { serial = serials[i], revoked_at = now - i, reason = i % 2 == 0 and 1 or nil } end
  local crl_der = assert(core.crl_build { issuer_cert = ca, issuer_key = ca_key, this_update = now - 60,
    next_update = now + 86400, entries = entries })
  local crl
  local w, c = measure(10, function() crl = assert(core.crl_parse(crl_der, ca, now, 300)) end)
  io.stdout:write(string.format("  %-22s %8.0f us wall %8.0f us cpu  (%d entries, %d bytes; %.2f us/entry)\n",
    "crl_parse", w, c, N, #crl_der, w / N))
  report("crl:lookup", N, function(i) crl:lookup(serials[i]) end)
  crl:close()
end
