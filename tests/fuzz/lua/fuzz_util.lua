--- fuzz_util: what the Lua fuzz drivers share (tests/fuzz/lua_host.h runs them).
--
-- An input is a kind byte and a script: answers separated by NUL bytes, served
-- one per request by a fake transport in place of loop.http / client.transport.
-- An answer starting "HTTP <status>\n" carries its own header lines up to an
-- empty line ("Name: value"; names lower-cased, as the core hands them out),
-- then the body; any other answer is a body with the driver's default status
-- and headers. When the script runs out the transport fails as a refused
-- connection does, so every flow ends.
local core = require "certmaint.core"
local loop = require "certmaint.loop"

local M = {}

M.SEPARATOR = "\0"
M.VERBOSE = os.getenv("FUZZ_LUA_VERBOSE") ~= nil -- the flow's log lines to stderr (seed writing)
M.TASK_TIMEOUT = 10 -- seconds one input may take in the loop (only sleeps could)

-- quiet, but formatted: log lines with fuzzed fields go to memory, dropped per input
core.log_config { capture = true, echo = false, level = "debug" }

function M.split(s)
  local out, pos = {}, 1
  while true do
    local i = s:find(M.SEPARATOR, pos, true)
    if not i then out[#out + 1] = s:sub(pos) return out end
    out[#out + 1] = s:sub(pos, i - 1)
    pos = i + 1
  end
end

--- One answer from a chunk (see the header); defaults = { status =, headers = }.
function M.answer(chunk, defaults)
  local status, rest = chunk:match("^HTTP (%d%d%d)\n()")
  if not status then
    local headers = {}
    for k, v in pairs(defaults.headers or {}) do headers[k] = v end
    return { status = defaults.status or 200, headers = headers, body = chunk }
  end
  local headers = {}
  local pos = rest
  while true do
    local line, nxt = chunk:match("^([^\n]*)\n()", pos)
    if not line then pos = #chunk + 1 break end
    pos = nxt
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then headers[name:lower()] = value end
  end
  return { status = tonumber(status), headers = headers, body = chunk:sub(pos) }
end

--- A transport serving the chunks in order; answer_for(req) may answer a
-- request itself (a canned directory, a nonce) by returning an answer.
function M.transport(chunks, defaults, answer_for)
  local i = 0
  local served = { requests = {} }
  return function(req)
    served.requests[#served.requests + 1] = tostring(req.method) .. " " .. tostring(req.url)
    local canned = answer_for and answer_for(req)
    if canned then return canned end
    i = i + 1
    if i > #chunks then
      return nil, tostring(req.method) .. " " .. tostring(req.url) .. ": fuzz: connection refused", "connect"
    end
    return M.answer(chunks[i], defaults)
  end, served
end

--- Run fn(...) in a loop task until it ends; raise its error (the host judges
-- it); a task still waiting after TASK_TIMEOUT is a hang.
function M.task(fn, ...)
  local args = table.pack(...)
  local t = loop.spawn(function() return fn(table.unpack(args, 1, args.n)) end)
  local ok = loop.run_until(function() return t.done end, { timeout = M.TASK_TIMEOUT })
  local lines = core.log_take()
  if M.VERBOSE then
    for _, l in ipairs(lines) do io.stderr:write("  log: ", l, "\n") end
    io.stderr:write("  task: ", tostring(t.ok), " ", tostring(t.error or ""), "\n")
  end
  if not ok then
    loop.reset()
    error("fuzz: hang: the task did not end within " .. M.TASK_TIMEOUT .. " s", 0)
  end
  if not t.ok then error(t.error, 0) end
  return table.unpack(t.results, 1, t.results.n)
end

--- Check a `nil, err, code` failure has the documented shape.
function M.check_failure(what, v, err, code)
  if v ~= nil and v ~= false then return end
  if err == nil then error("fuzz: " .. what .. " failed with no error (property broken)", 0) end
  if code ~= nil and type(code) ~= "string" then
    error("fuzz: " .. what .. " gave a code that is not a string: " .. type(code) .. " (property broken)", 0)
  end
end

return M
