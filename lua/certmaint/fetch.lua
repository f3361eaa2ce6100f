--- certmaint.fetch: bounded HTTP fetches of revocation data (OCSP, CRLs)
-- over loop.http, from a loop task.
--
--   local body, err, code = fetch.get(url, { max_size = 65536, timeout = 10 })
--   local der, err, code = fetch.ocsp(url, request_der, { max_size = 65536, timeout = 10 })
--
-- OCSP and CRL URLs are plain HTTP by design (RFC 5019, 6960: the answers are
-- signed), so http and https are allowed, nothing else. Redirects are not
-- followed. A body past max_size aborts the transfer ("toobig"); an HTTP
-- status other than 200 fails ("http"). Every error names the URL.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local options = require "certmaint.options"

local M = {}

M.DEFAULT_MAX_SIZE = 65536
M.DEFAULT_TIMEOUT = 10
--- RFC 5019 section 5: GET when the URL-encoded request fits 255 bytes.
M.GET_MAX = 255

local OPTS = {
  max_size = { type = "number", default = M.DEFAULT_MAX_SIZE },
  timeout = { type = "number", default = M.DEFAULT_TIMEOUT },
  headers = { type = "table" },
}

local function check_opts(opts, what)
  local o = options.check(opts, OPTS, what, 3)
  if o.max_size < 1 or o.max_size ~= math.floor(o.max_size) then
    error(what .. ": max_size must be a positive integer", 3)
  end
  if not (o.timeout > 0) then error(what .. ": timeout must be positive", 3) end
  return o
end

local function check_url(url, what)
  if type(url) ~= "string" then error(what .. ": url must be a string", 3) end
  if not url:match("^[hH][tT][tT][pP][sS]?://[^/]") then
    return nil, what .. ": " .. url .. ": not an http(s) URL", "url"
  end
  return true
end

-- The request, sized and timed; the answer's body | nil, err, code.
local function request(req, o, url)
  req.url = url
  req.timeout = o.timeout
  req.connect_timeout = math.min(o.timeout, 10)
  req.stall_timeout = math.min(o.timeout, 15)
  req.max_bytes = o.max_size
  req.protocols = "http,https"
  local resp, err, code = loop.http(req)
  if not resp then
    if code == "toobig" then err = "answer larger than " .. o.max_size .. " bytes" end
    return nil, url .. ": " .. tostring(err), code or "network"
  end
  if resp.status ~= 200 then
    return nil, url .. ": HTTP status " .. tostring(resp.status), "http"
  end
  local body = resp.body or ""
  if #body > o.max_size then -- the core bounds it already; never trust one layer
    return nil, url .. ": answer larger than " .. o.max_size .. " bytes", "toobig"
  end
  return body
end

--- fetch.get(url, {max_size=, timeout=, headers=}) -> body | nil, err, code
function M.get(url, opts)
  local o = check_opts(opts, "fetch.get")
  local ok, err, code = check_url(url, "fetch.get")
  if not ok then return nil, err, code end
  return request({ method = "GET", headers = o.headers }, o, url)
end

-- RFC 5019 section 5: the request's base64, URL-encoded ('+', '/', '=' as
-- %2B, %2F, %3D), after the responder URL and one '/'.
local function url_encode_b64(b64)
  return (b64:gsub("[+/=]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- The URL a GET of `request_der` goes to, or nil when it is too long for
-- GET (then POST). Exposed for specs and the bench.
function M.ocsp_get_url(url, request_der)
  local base = url:sub(-1) == "/" and url or (url .. "/")
  local path = url_encode_b64(core.base64_encode(request_der))
  if #path > M.GET_MAX then return nil end
  return base .. path
end

--- fetch.ocsp(url, request_der, {max_size=, timeout=}) -> response DER | nil, err, code:
-- GET with the request in the path when it fits 255 bytes, POST
-- (application/ocsp-request) otherwise.
function M.ocsp(url, request_der, opts)
  local o = check_opts(opts, "fetch.ocsp")
  if type(request_der) ~= "string" or request_der == "" then
    error("fetch.ocsp: request_der must be a non-empty string", 2)
  end
  local ok, err, code = check_url(url, "fetch.ocsp")
  if not ok then return nil, err, code end
  local get_url = M.ocsp_get_url(url, request_der)
  if get_url then
    local body, gerr, gcode = request({ method = "GET" }, o, get_url)
    -- the error names the responder's URL, not the request's base64
    if not body and gerr:sub(1, #get_url) == get_url then gerr = url .. gerr:sub(#get_url + 1) end
    if not body then return nil, gerr, gcode end
    return body
  end
  return request({ method = "POST", body = request_der,
    headers = { ["Content-Type"] = "application/ocsp-request" } }, o, url)
end

return M
