--- tests/fuzz/make-seeds.lua: writes the seed corpora of the harnesses added
-- with the Lua host and the key/HTTP harnesses (corpus/<harness>/seed_*),
-- from the documents a real CA (Pebble, Let's Encrypt), etcd's gateway and
-- certmagic write, and from tests/fixtures/.  Run from the source tree:
--   lua5.4 tests/fuzz/make-seeds.lua
-- It only adds or overwrites its own seed_* files; inputs that libFuzzer found
-- or reproducers (named for what broke) are kept beside them by hand.
local ROOT = arg and arg[0]:match("^(.*)/tests/fuzz/") or "."
local SEP = "\0"

local function read(path)
  local f = assert(io.open(ROOT .. "/" .. path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(harness, name, bytes)
  local dir = ROOT .. "/tests/fuzz/corpus/" .. harness
  os.execute("mkdir -p '" .. dir .. "'")
  local f = assert(io.open(dir .. "/seed_" .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function http(status, headers, body)
  local t = { "HTTP " .. status }
  for _, h in ipairs(headers) do t[#t + 1] = h end
  return table.concat(t, "\n") .. "\n\n" .. body
end

local CHAIN = read("tests/fixtures/x509/ok_chain.pem")
local B = "https://ca.test"

-- ---- lua_acme ------------------------------------------------------------------
local DIR = '{"keyChange":"' .. B .. '/rollover-account-key","meta":{"externalAccountRequired":false,'
  .. '"termsOfService":"data:text/plain,Do%20what%20thou%20wilt","profiles":{"default":"The profile you know",'
  .. '"shortlived":"A short-lived cert profile"}},"newAccount":"' .. B .. '/sign-me-up","newNonce":"' .. B
  .. '/nonce-plz","newOrder":"' .. B .. '/order-plz","renewalInfo":"' .. B .. '/draft-ietf-acme-ari-03/renewalInfo",'
  .. '"revokeCert":"' .. B .. '/revoke-cert"}'
write("lua_acme", "directory", "\0" .. DIR .. SEP .. http(200, { "Replay-Nonce: 9GN8y2S1_jEXyvYFuA6hLw" }, ""))
write("lua_acme", "directory_not", "\0" .. '{"newNonce":5,"newOrder":[]}')
write("lua_acme", "directory_500", "\0" .. http(503, { "Content-Type: application/problem+json",
  "Retry-After: 30" }, '{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down"}'))

local ACCT = '{"status":"valid","contact":["mailto:fuzz@example.com"],"orders":"' .. B .. '/list-orderz/1",'
  .. '"key":{"kty":"EC","crv":"P-256","x":"x","y":"y"}}'
write("lua_acme", "account", "\1" .. ACCT)
write("lua_acme", "account_no_location", "\1" .. http(201, { "Content-Type: application/json" }, ACCT))
write("lua_acme", "account_eab_required", "\1" .. http(400, { "Content-Type: application/problem+json" },
  '{"type":"urn:ietf:params:acme:error:externalAccountRequired","detail":"no EAB","status":400}'))

local ORDER = '{"status":"pending","expires":"2030-01-01T00:00:00Z","identifiers":[{"type":"dns","value":'
  .. '"example.com"},{"type":"dns","value":"*.example.com"}],"finalize":"' .. B .. '/finalize-order/1",'
  .. '"authorizations":["' .. B .. '/authZ/1","' .. B .. '/authZ/2"]}'
local AUTHZ1 = '{"status":"pending","identifier":{"type":"dns","value":"example.com"},"challenges":['
  .. '{"type":"http-01","url":"' .. B .. '/chalZ/1","token":"tok1_abc","status":"pending"},'
  .. '{"type":"dns-01","url":"' .. B .. '/chalZ/2","token":"tok2_abc","status":"pending"},'
  .. '{"type":"tls-alpn-01","url":"' .. B .. '/chalZ/3","token":"tok3_abc","status":"pending"}],'
  .. '"expires":"2030-01-01T00:00:00Z"}'
local AUTHZ2 = '{"status":"pending","identifier":{"type":"dns","value":"example.com"},"wildcard":true,'
  .. '"challenges":[{"type":"dns-01","url":"' .. B .. '/chalZ/4","token":"tok4_abc","status":"pending"}]}'
local CHAL = '{"type":"http-01","url":"' .. B .. '/chalZ/1","token":"tok1_abc","status":"processing"}'
local AUTHZ_VALID = AUTHZ1:gsub('^{"status":"pending"', '{"status":"valid"')
local READY = ORDER:gsub('"pending"', '"ready"')
local PROCESSING = ORDER:gsub('"pending"', '"processing"')
local VALID = ORDER:gsub('"pending"', '"valid"'):gsub('}$', ',"certificate":"' .. B .. '/certZ/1"}')
local CERT = http(200, { "Content-Type: application/pem-certificate-chain",
  "Link: <" .. B .. '/certZ/1/1>;rel="alternate"', "Link: <" .. B .. '/dir>;rel="index"' }, CHAIN)
write("lua_acme", "order_full", "\2" .. table.concat({ ORDER, AUTHZ1, CHAL, AUTHZ2, CHAL, AUTHZ_VALID,
  AUTHZ_VALID, READY, PROCESSING, VALID, CERT, CHAIN }, SEP))
write("lua_acme", "order_ready", "\2" .. table.concat({ READY, VALID, VALID, CERT }, SEP))
write("lua_acme", "order_invalid", "\2" .. table.concat({ ORDER, AUTHZ1, CHAL,
  '{"status":"invalid","identifier":{"type":"dns","value":"example.com"},"challenges":[{"type":"http-01",'
  .. '"status":"invalid","error":{"type":"urn:ietf:params:acme:error:connection","detail":"refused"}}]}' }, SEP))
write("lua_acme", "order_retry_after", "\2" .. table.concat({ READY,
  http(200, { "Content-Type: application/json", "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT" }, PROCESSING),
  http(200, { "Content-Type: application/json", "Retry-After: 0" }, VALID), CERT }, SEP))
write("lua_acme", "order_no_location", "\2" .. http(201, { "Content-Type: application/json" }, ORDER))
write("lua_acme", "authz", "\3" .. table.concat({ AUTHZ1, CHAL, AUTHZ2, CHAL, AUTHZ_VALID, AUTHZ_VALID,
  READY, VALID, CERT }, SEP))
write("lua_acme", "authz_deactivated", "\3" .. '{"status":"deactivated","identifier":{"type":"dns","value":"x"}}')
write("lua_acme", "authz_no_challenge", "\3" .. '{"status":"pending","identifier":{"type":"dns","value":"x"},'
  .. '"challenges":[{"type":"tls-alpn-01","url":"u","token":"t"}]}')
local PROBLEM = '{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates (5) already '
  .. 'issued for this exact set of domains","status":429}'
write("lua_acme", "problem_ratelimited", "\4" .. http(429, { "Content-Type: application/problem+json",
  "Retry-After: 3600", "Link: <https://letsencrypt.org/docs/rate-limits/>;rel=\"help\"" }, PROBLEM))
write("lua_acme", "problem_badnonce", "\4" .. table.concat({
  '{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce"}',
  '{"type":"urn:ietf:params:acme:error:badNonce","detail":"again"}',
  http(200, { "Content-Type: application/json" }, '{"status":"valid"}') }, SEP))
write("lua_acme", "problem_compound", "\4" .. '{"type":"urn:ietf:params:acme:error:compound","detail":'
  .. '"several","subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"CAA forbids",'
  .. '"identifier":{"type":"dns","value":"a.example"}},{"type":"urn:ietf:params:acme:error:dns","detail":'
  .. '"NXDOMAIN","identifier":{"type":"dns","value":"b.example"}},5,"x"]}')
write("lua_acme", "problem_html", "\4" .. http(502, { "Content-Type: text/html" }, "<html>Bad Gateway</html>"))

-- ---- lua_etcd ------------------------------------------------------------------
local function b64(s)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, byte = "", x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
local HDR = '"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437",'
  .. '"revision":"42","raft_term":"2"}'
local KEY = "/certmaint/data/certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.crt"
local KV = '{"key":"' .. b64(KEY) .. '","create_revision":"40","mod_revision":"41","version":"2","value":"'
  .. b64("certmaint:1 1700000000000\n" .. CHAIN) .. '"}'
local TXN_FOUND = "{" .. HDR .. ',"succeeded":true,"responses":[{"response_range":{' .. HDR .. ',"kvs":[' .. KV
  .. '],"count":"1"}},{"response_range":{' .. HDR .. ',"count":"0"}}]}'
local TXN_EMPTY = "{" .. HDR .. ',"succeeded":true,"responses":[{"response_range":{' .. HDR
  .. '}},{"response_range":{' .. HDR .. '}}]}'
local TXN_DIR = "{" .. HDR .. ',"succeeded":true,"responses":[{"response_range":{' .. HDR
  .. '}},{"response_range":{' .. HDR .. ',"count":"3"}}]}'
local RANGE = "{" .. HDR .. ',"kvs":[{"key":"' .. b64(KEY) .. '","mod_revision":"41"},{"key":"'
  .. b64("/certmaint/data/certificates/x/y/y.key") .. '","mod_revision":"43"}],"more":false,"count":"2"}'
local GRANT = "{" .. HDR .. ',"ID":"7587874637029193995","TTL":"30"}'
local TXN_PUT = "{" .. HDR .. ',"succeeded":true,"responses":[{"response_put":{' .. HDR .. "}}]}"
local TXN_FAIL = "{" .. HDR .. ',"responses":[{"response_range":{' .. HDR .. ',"kvs":[{"key":"'
  .. b64("/certmaint/locks/example.com") .. '","mod_revision":"50","value":"'
  .. b64('{"owner":"host:1:abc","created":"2024-01-01T00:00:00Z","updated":"2024-01-01T00:00:00Z"}') .. '"}]}}]}'
local ERR = '{"error":"etcdserver: request is too large","code":3,"message":"etcdserver: request is too large"}'
write("lua_etcd", "load_found", "\0" .. TXN_FOUND)
write("lua_etcd", "load_missing", "\0" .. TXN_EMPTY)
write("lua_etcd", "load_dir", "\0" .. TXN_DIR)
write("lua_etcd", "load_no_envelope", "\0" .. TXN_FOUND:gsub(b64("certmaint:1 1700000000000\n" .. CHAIN), b64("raw")))
write("lua_etcd", "load_error", "\0" .. http(400, {}, ERR))
write("lua_etcd", "load_5xx_failover", "\0" .. http(503, {}, "unavailable") .. SEP .. TXN_FOUND)
write("lua_etcd", "load_many", "\1" .. TXN_FOUND:gsub('%]}$', ',{"response_range":{"kvs":[' .. KV .. ']}}]}')
  .. SEP .. TXN_DIR)
write("lua_etcd", "exists", "\2" .. TXN_DIR)
write("lua_etcd", "list", "\3" .. RANGE)
write("lua_etcd", "list_more", "\4" .. RANGE:gsub('"more":false', '"more":true') .. SEP .. RANGE)
write("lua_etcd", "list_empty", "\3" .. "{" .. HDR .. "}" .. SEP .. TXN_FOUND)
write("lua_etcd", "stat", "\5" .. TXN_DIR .. SEP .. RANGE .. SEP .. "{" .. HDR .. ',"kvs":[' .. KV .. "]}"
  .. SEP .. TXN_FOUND)
write("lua_etcd", "store", "\6" .. TXN_PUT)
write("lua_etcd", "store_refused", "\6" .. "{" .. HDR .. ',"succeeded":false}' .. SEP .. TXN_FOUND)
write("lua_etcd", "delete", "\7" .. TXN_PUT)
write("lua_etcd", "lock", "\8" .. GRANT .. SEP .. TXN_PUT .. SEP .. TXN_PUT .. SEP .. TXN_PUT .. SEP
  .. "{" .. HDR .. "}")
write("lua_etcd", "lock_held", "\8" .. GRANT .. SEP .. TXN_FAIL)
write("lua_etcd", "commit", "\9" .. TXN_PUT)
write("lua_etcd", "commit_fenced", "\9" .. TXN_FAIL)
write("lua_etcd", "auth", "\10" .. '{' .. HDR .. ',"token":"sEFZqMBmVlqQTOUM.9"}' .. SEP .. TXN_FOUND)
write("lua_etcd", "auth_expired", "\10" .. '{"token":"a"}' .. SEP .. http(401, {},
  '{"error":"etcdserver: invalid auth token","code":16}') .. SEP .. '{"token":"b"}' .. SEP .. TXN_FOUND)
write("lua_etcd", "auth_denied", "\10" .. http(400, {}, '{"error":"etcdserver: authentication failed"}'))

-- ---- lua_storage_json ----------------------------------------------------------
write("lua_storage_json", "lock", "\0" .. '{"owner":"host:1234:9f8e","created":"2024-05-01T10:00:00.123456789Z",'
  .. '"updated":"2024-05-01T10:00:05Z","grant":"g-1"}')
write("lua_storage_json", "lock_caddy", "\0" .. '{"created":"2024-05-01T10:00:00Z","updated":"2024-05-01T10:00:05Z"}')
write("lua_storage_json", "account", "\1" .. '{"status":"valid","contact":["mailto:fuzz@example.com"],'
  .. '"termsOfServiceAgreed":true,"orders":"","location":"https://ca.test/acct/1"}')
write("lua_storage_json", "account_no_location", "\1" .. '{"status":"valid","contact":[]}')
write("lua_storage_json", "order", "\2" .. '{"url":"https://ca.test/order/1","names":["example.com"],'
  .. '"account":"https://ca.test/acct/1","created":1700000000,"expires":"2030-01-01T00:00:00Z"}')
write("lua_storage_json", "order_other_names", "\2" .. '{"url":"u","names":["a.example","b.example"],"account":5}')
write("lua_storage_json", "token", "\3" .. '{"identifier":{"type":"dns","value":"example.com"},'
  .. '"keyAuthorization":"tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF.thumb","status":"pending",'
  .. '"token":"tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF","type":"http-01","url":"https://ca.test/chalZ/1"}')
write("lua_storage_json", "token_other", "\3" .. '{"identifier":{"value":"EXAMPLE.com"},"keyAuthorization":"x",'
  .. '"token":"other","type":"dns-01"}')
write("lua_storage_json", "meta_certmagic", "\4" .. '{\n\t"sans": [\n\t\t"example.com"\n\t],\n\t"issuer_data": {\n'
  .. '\t\t"url": "https://acme-v02.api.letsencrypt.org/acme/cert/04ab",\n\t\t"ca": "https://acme-v02.api.'
  .. 'letsencrypt.org/directory",\n\t\t"renewal_info": {\n\t\t\t"suggestedWindow": {\n\t\t\t\t"start": '
  .. '"2024-06-01T00:00:00Z",\n\t\t\t\t"end": "2024-06-03T00:00:00Z"\n\t\t\t},\n\t\t\t"explanationURL": '
  .. '"https://letsencrypt.org/x",\n\t\t\t"_uniqueIdentifier": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",\n'
  .. '\t\t\t"_retryAfter": "2024-05-02T06:00:00.5Z",\n\t\t\t"_selectedTime": "2024-06-02T01:02:03Z"\n\t\t}\n'
  .. '\t}\n}')
write("lua_storage_json", "meta_certmaint", "\4" .. '{"sans":["example.com"],"issuer_data":{},"certmaint":'
  .. '{"key_type":"rsa2048"}}')
write("lua_storage_json", "meta_window_reversed", "\4" .. '{"issuer_data":{"renewal_info":{"suggestedWindow":'
  .. '{"start":"2024-06-03T00:00:00Z","end":"2024-06-01T00:00:00+01:00"}}}}')
write("lua_storage_json", "deploy", "\5" .. '{"targets":{"nginx":{"serial":"04ab","at":1700000000,"ok":true}}}')
write("lua_storage_json", "state", "\6" .. '{"attempts":3,"next_attempt":1700000600,"last_error":"HTTP 429",'
  .. '"status":"waiting"}')

-- ---- lua_duration, lua_names ---------------------------------------------------
local durations = { "90s", "10m", "1h30m", "7d", "1.5h", "0s", "1d2h3m4.5s", "30m1h", "1m1m", "10", "-5", "1e309",
  "nan", "0x10", "  5m", "1.", string.rep("9", 64) .. "d" }
for i, d in ipairs(durations) do write("lua_duration", string.format("duration_%02d", i), "\0" .. d) end
write("lua_duration", "number", "\1" .. "3600")
write("lua_duration", "number_frac", "\1" .. "0.25")
for i, t in ipairs { "2024-03-01T12:59:55.1+01:00", "2024-05-01T10:00:00.123456789Z", "1970-01-01T00:00:00Z",
  "9999-12-31T23:59:60Z", "0000-01-01t00:00:00z", "2024-02-30T00:00:00-23:59", "2024-01-01T00:00:00" } do
  write("lua_duration", string.format("rfc3339_%02d", i), "\2" .. t)
end
write("lua_duration", "retry_after_seconds", "\3" .. "120")
write("lua_duration", "retry_after_date", "\3" .. "Wed, 21 Oct 2015 07:28:00 GMT")
write("lua_duration", "links", "\4" .. '<https://ca.test/cert/1/1>;rel="alternate", <https://ca.test/dir>;rel=index, '
  .. '<https://ca.test/x>; title="x"; rel="up alternate"')
for i, n in ipairs { "Example.COM.", "*.example.com", "xn--bcher-kva.example", "bücher.example", "192.0.2.1",
  "[2001:db8::1]", "2001:DB8:0:0:0:0:0:1", string.rep("a", 63) .. "." .. string.rep("b", 63) .. ".example" } do
  write("lua_names", string.format("name_%02d", i), "\0" .. n)
end
write("lua_names", "safe", "\1" .. " Fuzz+Me@Example.COM ..*:/\\")
write("lua_names", "issuer_url", "\2" .. "https://user@acme-v02.api.letsencrypt.org:443/directory%2F..%2f")
write("lua_names", "issuer_name", "\2" .. "local")
write("lua_names", "email", "\3" .. "Fuzz.Me+tag@Example.com")
write("lua_names", "email_empty", "\3")
write("lua_names", "host", "\4" .. "Example.COM.:80")
write("lua_names", "host_v6", "\4" .. "[2001:db8::1]:5002")
write("lua_names", "token", "\5" .. "tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF")

-- ---- pem_key -------------------------------------------------------------------
for _, f in ipairs { "x509/ok_leaf.key", "x509/ok_other_rsa.key", "x509/ok_root.key", "jws/rfc7515_a3_p256.pem",
  "jws/rfc7515_a2_rsa.pem", "jws/rfc7638_rsa_public.pem" } do
  write("pem_key", (f:gsub("[/.]", "_")), read("tests/fixtures/" .. f))
end
write("pem_key", "leaf_cert", read("tests/fixtures/x509/ok_leaf.pem"))

-- ---- http_request --------------------------------------------------------------
local TOKEN = "/.well-known/acme-challenge/tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
local reqs = {
  challenge = "\0GET " .. TOKEN .. " HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Boulder\r\nAccept: */*\r\n\r\n",
  head = "\0HEAD " .. TOKEN .. "?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
  not_found = "\0GET /.well-known/acme-challenge/other HTTP/1.0\r\n\r\n",
  post = "\0POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
  pipelined = "\0GET " .. TOKEN .. " HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"
    .. "GET http://example.com" .. TOKEN .. " HTTP/1.1\r\nConnection: close\r\n\r\n",
  bare_lf = "\0GET " .. TOKEN .. " HTTP/1.1\nHost: example.com\n\n",
  bad_version = "\0GET / HTTP/2.0\r\n\r\n",
  event_get = "\1GET /.well-known/acme-challenge/abc HTTP/1.1\r\nHost: Example.COM:80\r\nX-A:  b \r\n\r\n",
  event_post = "\1POST /hook?q=1 HTTP/1.1\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
  event_chunked = "\1PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
  event_two_lengths = "\1POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
  event_too_large = "\1POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
  event_pipelined = "\1GET /a HTTP/1.1\r\n\r\nGET " .. TOKEN .. " HTTP/1.1\r\n\r\nDELETE /b HTTP/1.1\r\n\r\n",
}
for name, r in pairs(reqs) do write("http_request", name, r) end
