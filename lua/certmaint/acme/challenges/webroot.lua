--- certmaint.acme.challenges.webroot: http-01 answered by a web server that
-- is already running (nginx, Apache, Caddy's file_server): the key
-- authorization is written to <dir>/.well-known/acme-challenge/<token>, which
-- that server publishes, and removed after validation.
--
--   challenges = { webroot = "/srv/www" }
--   challenges = { webroot = { dir = "/srv/www", file_mode = "0644", distributed = true } }
--
-- The webroot itself must exist (a typo must not create a folder nobody
-- serves); .well-known/acme-challenge/ below it is made (0755) when missing
-- and removed again, once empty, by the solver that made it. Files are written
-- atomically (a temp file beside, renamed over), file_mode 0644 so the web
-- server's user can read them. The token comes from the CA: it is used as a
-- file name only when it is base64url (no '/', no '.').
-- distributed: also keep the challenge in storage (certmaint.acme.challenges.tokens),
-- so an instance answering http-01 on the same storage can answer it too.
local core = require "certmaint.core"
local options = require "certmaint.options"
local tokens = require "certmaint.acme.challenges.tokens"

local M = {}

M.TYPE = "http-01"
M.SCHEMA = {
  dir = { type = "string", required = true,
    check = function(v) return v ~= "" and v:sub(1, 1) == "/", "must be an absolute path" end },
  file_mode = { type = "string", default = "0644",
    check = function(v) return v:match("^0?[0-7][0-7][0-7]$") ~= nil, "must be an octal string like \"0644\"" end },
  distributed = { type = "boolean", default = true },
}

local Solver = {}
Solver.__index = Solver

--- new(opts, ctx): opts is the webroot path or a table (SCHEMA);
-- ctx = { storage =, issuer_key =, log = fn(level, event, fields) } (storage and
-- issuer_key for distributed; log defaults to core.log).
function M.new(opts, ctx)
  if type(opts) == "string" then opts = { dir = opts } end
  local o = options.check(opts, M.SCHEMA, "certmaint.acme.challenges.webroot", 2)
  ctx = ctx or {}
  local dir = o.dir:gsub("/+$", "")
  if dir == "" then dir = "/" end
  local base = dir == "/" and "" or dir
  return setmetatable({
    dir = dir,
    well_known = base .. "/.well-known",
    challenge_dir = base .. "/.well-known/acme-challenge",
    file_mode = o.file_mode,
    distributed = o.distributed and ctx.storage ~= nil and ctx.issuer_key ~= nil,
    ctx = ctx,
    made = {},        -- folders this solver made, removed when empty again
    active = 0,       -- challenges presented and not yet cleaned up
  }, Solver)
end

function Solver:path(chal) return self.challenge_dir .. "/" .. chal.token end

local function fail(chal, what, err, code)
  return nil, string.format("http-01 (webroot) challenge for %s: %s: %s", chal.identifier, what, tostring(err)),
    code
end

-- Make .well-known/acme-challenge, noting which parts did not exist.
function Solver:make_dirs(chal)
  local st, err, code = core.stat(self.dir)
  if not st then
    return fail(chal, "webroot " .. self.dir .. " does not exist", err, code)
  end
  if st.type ~= "directory" then return fail(chal, "webroot " .. self.dir, "not a directory", "ENOTDIR") end
  for _, d in ipairs { self.well_known, self.challenge_dir } do
    if not core.stat(d) then
      local ok, merr, mcode = core.mkdir_p(d, "0755")
      if not ok then return fail(chal, "cannot make " .. d, merr, mcode) end
      self.made[#self.made + 1] = d
    end
  end
  return true
end

function Solver:present(chal)
  if not tokens.valid_token(chal.token) then
    return fail(chal, "token", string.format("%q is not base64url, refused as a file name",
      tostring(chal.token):sub(1, 80)), "invalid")
  end
  if self.distributed then
    local ok, err, code = tokens.present(self.ctx.storage, self.ctx.issuer_key, chal)
    if not ok then return nil, err, code end
  end
  local ok, err, code = self:make_dirs(chal)
  if ok then
    ok, err, code = core.write_atomic(self:path(chal), chal.key_authorization, self.file_mode)
    if not ok then err, code = select(2, fail(chal, "cannot write " .. self:path(chal), err, code)) end
  end
  if not ok then
    if self.distributed then tokens.cleanup(self.ctx.storage, self.ctx.issuer_key, chal) end
    return nil, err, code
  end
  self.active = self.active + 1
  local log = self.ctx.log or core.log
  log("debug", "challenge_presented", { challenge = "http-01", solver = "webroot",
    identifier = chal.identifier, file = self:path(chal) })
  return true
end

function Solver:cleanup(chal)
  if not tokens.valid_token(chal.token) then return true end -- never written
  local ok, err, code = core.remove(self:path(chal))
  local failure
  if not ok and code ~= "ENOENT" then failure = table.pack(fail(chal, "cannot remove " .. self:path(chal), err, code)) end
  if self.active > 0 then self.active = self.active - 1 end
  if self.active == 0 then
    -- innermost first; a folder someone else put files in stays
    for i = #self.made, 1, -1 do core.rmdir(self.made[i]) end
    self.made = {}
  end
  if self.distributed then
    local tok, terr, tcode = tokens.cleanup(self.ctx.storage, self.ctx.issuer_key, chal)
    if not tok and not failure then failure = table.pack(nil, terr, tcode) end
  end
  if failure then return table.unpack(failure, 1, 3) end
  return true
end

return M
