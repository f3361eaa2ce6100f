--- Shipped notification hooks for on_failure, on_expiring and on_recovered
-- (README "Notifications"). Each helper returns a function(cert, info) for
-- any of the three; info.event says which ("failure" | "expiring" |
-- "recovered"). The engine de-duplicates (engine/alerts.lua): a helper is
-- called once per problem, once per repeat_interval, and once on recovery.
--
--   local notify = certmaint.notify
--   local page = notify.webhook { url = "https://hooks.example/certmaint",
--                                 headers = { Authorization = "Bearer ..." } }
--   return certmaint.policy { ...,
--     on_failure = page, on_expiring = page, on_recovered = page }
--
--   notify.command { argv = { "/usr/local/bin/page-oncall" } }  -- event JSON on stdin, CERTMAINT_* env
--   notify.sendmail { to = "ops@example.com", from = "certmaint@web1.example.com" }
--
-- Everything runs inside the engine's notify workers and waits in the loop
-- (loop.http, loop.exec), never blocking it; every wait is bounded. A helper
-- returns true when delivered, or nil, err when it gave up (the engine logs
-- notify_failed); bad options raise when the policy loads.
local core = require "certmaint.core"
local loop = require "certmaint.loop"
local options = require "certmaint.options"
local rfc3339 = require "certmaint.rfc3339"

local M = {}

local function iso(t) return type(t) == "number" and rfc3339.iso(t) or nil end

--- The event as a JSON-ready table (what the webhook posts, the command reads
-- on stdin, the mail lists). Fields (absent when they do not apply):
--   event "failure"|"expiring"|"recovered", kind "renew"|"deploy"|"expiring",
--   name (the primary name), names, host (this machine), at, since (RFC 3339),
--   message, code, attempt, failures (count since `since`), repeat (bool),
--   final (bool: the renewal will not be retried), serial, issuer,
--   not_after (RFC 3339), seconds_left, threshold (seconds), expired (bool).
function M.payload(cert, info)
  cert, info = cert or {}, info or {}
  local names = {}
  for i, n in ipairs(info.names or cert.names or {}) do names[i] = n end
  return {
    event = info.event, kind = info.kind, name = info.name or names[1], names = names,
    host = info.host, at = iso(info.at), since = iso(info.since),
    message = info.message, code = info.code, attempt = info.attempt, failures = info.failures,
    ["repeat"] = info["repeat"], final = info.final,
    serial = cert.serial, issuer = cert.issuer,
    not_after = iso(info.not_after or cert.not_after), seconds_left = info.seconds_left,
    threshold = info.threshold, expired = info.expired,
  }
end

local WHAT = {
  failure = { renew = "renewal failed", deploy = "deploy failed" },
  expiring = { expiring = "certificate expiring" },
  recovered = { renew = "renewal recovered", deploy = "deploy recovered", expiring = "certificate renewed" },
}

-- Header-safe: one line, no control characters.
local function one_line(s)
  return (tostring(s or ""):gsub("[%c]+", " "):sub(1, 200))
end

--- A one-line subject: "certmaint: renewal failed for example.com on web1".
function M.subject(cert, info)
  local p = M.payload(cert, info)
  local what = (WHAT[p.event] or {})[p.kind] or (tostring(p.event) .. " " .. tostring(p.kind))
  return one_line(string.format("certmaint: %s%s for %s on %s", p["repeat"] and "still: " or "", what,
    tostring(p.name), tostring(p.host)))
end

local ORDER = { "event", "kind", "name", "names", "host", "at", "since", "message", "code", "attempt", "failures",
  "repeat", "final", "serial", "issuer", "not_after", "seconds_left", "threshold", "expired" }

--- The event as text, one "field: value" a line (the mail's body).
function M.text(cert, info)
  local p = M.payload(cert, info)
  local lines = {}
  for _, k in ipairs(ORDER) do
    local v = p[k]
    if type(v) == "table" then v = table.concat(v, ", ") end
    if v ~= nil and v ~= "" then lines[#lines + 1] = k .. ": " .. tostring(v):gsub("\r?\n", "\n  ") end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- webhook --------------------------------------------------------------------

local function check_headers(h)
  for k, v in pairs(h) do
    if type(k) ~= "string" or not k:match("^[%w%-]+$") then return false, "header names must be tokens" end
    if type(v) ~= "string" or v:find("[\r\n]") then return false, "header " .. k .. " must be a one-line string" end
  end
  return true
end

local WEBHOOK = {
  url = { type = "string", required = true,
    check = function(v) return v:match("^[hH][tT][tT][pP][sS]?://[^/]") ~= nil, "must be an http(s) URL" end },
  headers = { type = "table", default = {}, check = check_headers },
  timeout = { type = "duration", default = "10s", check = function(v) return v > 0, "must be positive" end },
  attempts = { type = "number", default = 4,
    check = function(v) return math.tointeger(v) ~= nil and v >= 1 and v <= 20, "must be an integer from 1 to 20" end },
  backoff = { type = "duration", default = "2s" },     -- before the 2nd attempt; doubles each time
  deadline = { type = "duration", default = "60s",     -- all attempts together
    check = function(v) return v > 0, "must be positive" end },
  ca_file = { type = "string" },
  body = { type = "function" },                        -- (payload) -> string: another JSON shape (Slack, ...)
}

--- notify.webhook{url=, headers=, timeout=, attempts=, backoff=, deadline=, ca_file=, body=}:
-- POST the payload as JSON (Content-Type: application/json) through the
-- core's HTTP client (libcurl, the one ACME uses). A 2xx answer delivers;
-- a network error, a timeout or a 5xx/429 answer is tried again after
-- backoff, 2*backoff, ... up to `attempts` in all and never past `deadline`;
-- another 4xx is final. Redirects are not followed.
function M.webhook(opts)
  local o = options.check(opts, WEBHOOK, "certmaint.notify.webhook", 2)
  local headers = { ["Content-Type"] = "application/json" }
  for k, v in pairs(o.headers) do headers[k] = v end
  return function(cert, info)
    local p = M.payload(cert, info)
    local body = o.body and o.body(p) or core.json_encode(p)
    if type(body) ~= "string" then error("certmaint.notify.webhook: body() must return a string", 0) end
    local started = core.monotonic()
    local wait = o.backoff
    local last
    for attempt = 1, o.attempts do
      local left = o.deadline - (core.monotonic() - started)
      if left <= 0 then break end
      local t = math.min(o.timeout, left)
      local resp, err, code = loop.http { method = "POST", url = o.url, headers = headers, body = body,
        timeout = t, connect_timeout = math.min(t, 10), stall_timeout = t, max_bytes = 65536,
        protocols = "http,https", ca_file = o.ca_file }
      if resp and resp.status >= 200 and resp.status < 300 then return true end
      if resp then
        last = o.url .. ": HTTP status " .. tostring(resp.status)
        if resp.status < 500 and resp.status ~= 429 then return nil, last end
      else
        last = o.url .. ": " .. tostring(err) .. (code and (" (" .. tostring(code) .. ")") or "")
      end
      if attempt < o.attempts then
        local pause = math.min(wait, o.deadline - (core.monotonic() - started))
        if pause <= 0 then break end
        loop.sleep(pause)
        wait = wait * 2
      end
    end
    return nil, "webhook gave up: " .. tostring(last or "deadline passed")
  end
end

-- command --------------------------------------------------------------------

local function check_argv(v)
  if #v == 0 then return false, "must name a program" end
  for k, a in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then return false, "must be a list of strings" end
    if type(a) ~= "string" then return false, string.format("[%d] must be a string", k) end
  end
  return true
end

local COMMAND = {
  argv = { type = "table", required = true, check = check_argv },
  timeout = { type = "duration", default = "30s", check = function(v) return v > 0, "must be positive" end },
  env = { type = "table", default = {} }, -- more variables, NAME = value
}

-- The environment a command or sendmail gets: PATH, the event's CERTMAINT_*
-- variables, and the policy's own (no other variable of the daemon's).
local function event_env(p, extra)
  local env = { PATH = os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin" }
  env.CERTMAINT_EVENT = p.event
  env.CERTMAINT_KIND = p.kind
  env.CERTMAINT_NAME = p.name
  env.CERTMAINT_NAMES = table.concat(p.names or {}, " ")
  env.CERTMAINT_MESSAGE = p.message and one_line(p.message) or nil
  env.CERTMAINT_NOT_AFTER = p.not_after
  env.CERTMAINT_REPEAT = p["repeat"] and "1" or "0"
  for k, v in pairs(extra or {}) do env[k] = tostring(v) end
  return env
end

local function run(argv, stdin, env, timeout, what)
  local r, err, code = loop.exec(argv, { stdin = stdin, env = env, timeout = timeout, max_output = 65536 })
  if not r then return nil, what .. ": " .. tostring(err) .. (code and (" (" .. tostring(code) .. ")") or "") end
  if r.status ~= 0 then
    local why = r.signal and ("killed by signal " .. tostring(r.signal)) or ("exit status " .. tostring(r.status))
    local stderr = r.stderr and r.stderr ~= "" and (": " .. one_line(r.stderr)) or ""
    return nil, what .. ": " .. why .. stderr
  end
  return true
end

--- notify.command{argv = {prog, args...}, timeout = "30s", env = {...}}
-- (or the argv as the list part: notify.command{"/bin/prog", "arg"}): runs
-- the program with no shell, the payload as JSON on its stdin and
-- CERTMAINT_EVENT, _KIND, _NAME, _NAMES, _MESSAGE, _NOT_AFTER, _REPEAT in
-- its environment (with PATH and `env`). Exit status 0 delivers; the program
-- gets SIGTERM, then SIGKILL, past `timeout`.
function M.command(opts)
  if type(opts) == "table" and opts[1] ~= nil then
    local o = {}
    for k, v in pairs(opts) do if math.type(k) ~= "integer" then o[k] = v end end
    if o.argv then error("certmaint.notify.command: give argv or a list, not both", 2) end
    o.argv = table.move(opts, 1, #opts, 1, {})
    opts = o
  end
  local o = options.check(opts, COMMAND, "certmaint.notify.command", 2)
  local argv = table.move(o.argv, 1, #o.argv, 1, {})
  return function(cert, info)
    local p = M.payload(cert, info)
    return run(argv, core.json_encode(p), event_env(p, o.env), o.timeout, argv[1])
  end
end

-- sendmail -------------------------------------------------------------------

local function check_address(v)
  if type(v) == "table" then
    if #v == 0 then return false, "is empty" end
    for _, a in ipairs(v) do
      if type(a) ~= "string" or a:find("[%c,]") or not a:find("@") then return false, "must be e-mail addresses" end
    end
    return true
  end
  if v:find("[%c]") or not v:find("@") then return false, "must be an e-mail address" end
  return true
end

local SENDMAIL = {
  to = { type = "any", required = true, check = function(v)
    if type(v) ~= "string" and type(v) ~= "table" then return false, "must be an address or a list of them" end
    return check_address(v)
  end },
  from = { type = "string", check = check_address },
  path = { type = "string", default = "/usr/sbin/sendmail" },
  timeout = { type = "duration", default = "30s", check = function(v) return v > 0, "must be positive" end },
}

--- The message notify.sendmail pipes to `sendmail -t -i` (exposed for specs):
-- From (when given), To, Subject (M.subject), Date, MIME headers, and M.text.
function M.mail(cert, info, to, from, now)
  local lines = {}
  if from then lines[#lines + 1] = "From: " .. from end
  lines[#lines + 1] = "To: " .. (type(to) == "table" and table.concat(to, ", ") or to)
  lines[#lines + 1] = "Subject: " .. M.subject(cert, info)
  lines[#lines + 1] = "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S +0000", math.floor(now or core.now()))
  lines[#lines + 1] = "MIME-Version: 1.0"
  lines[#lines + 1] = "Content-Type: text/plain; charset=utf-8"
  lines[#lines + 1] = "Auto-Submitted: auto-generated"
  lines[#lines + 1] = ""
  -- a body line that is a lone "." would end the message for some MTAs without -i
  return table.concat(lines, "\n") .. "\n" .. M.text(cert, info)
end

--- notify.sendmail{to = "ops@example.com" | {…}, from =, path = "/usr/sbin/sendmail", timeout = "30s"}:
-- hands the message to the local MTA as `path -t -i` (recipients from the
-- To header), no shell. Exit status 0 delivers.
function M.sendmail(opts)
  local o = options.check(opts, SENDMAIL, "certmaint.notify.sendmail", 2)
  local to = type(o.to) == "table" and table.move(o.to, 1, #o.to, 1, {}) or o.to
  return function(cert, info)
    local p = M.payload(cert, info)
    return run({ o.path, "-t", "-i" }, M.mail(cert, info, to, o.from, info and info.at), event_env(p), o.timeout, o.path)
  end
end

return M
