--- Deploying certificates where servers read them, then reloading the server.
--
--   on_renewed = certmaint.deploy.files {
--     dir = "/etc/nginx/certs",              -- <dir>/<name>/fullchain.pem, privkey.pem
--     reload = { "systemctl", "reload", "nginx" },  -- or "systemctl reload nginx"
--   }
--
--   on_renewed = certmaint.deploy.files {
--     dir = "/etc/haproxy/certs", layout = "haproxy",  -- <dir>/<name>.pem = chain + key
--     reload = { "systemctl", "reload", "haproxy" },
--   }
--
-- With staple = true (the default) the certificate's OCSP staple goes beside
-- it as DER, where the server reads one: <dir>/<name>.pem.ocsp for HAProxy
-- (it loads <crt>.ocsp next to each crt), <dir>/<name>/ocsp.der for the
-- split layout (nginx's ssl_stapling_file). Deploying a certificate writes
-- its own staple or removes the file (never the previous certificate's);
-- Target:deploy_staple writes a newer staple and reloads only when the
-- bytes changed.
--
-- Every file is written atomically (temp, fsync, rename), keys 0600. The reload
-- command runs through certmaint.exec, so it never blocks the loop; renewals
-- that finish while a reload runs are folded into one more reload after it.
-- The engine tracks what it deployed (engine/deploy.lua): a failed deploy is
-- retried on the renewal back-off, and at start-up files that are missing or
-- differ from storage are written again.
local core = require "certmaint.core"
local options = require "certmaint.options"

local M = {}

-- Where each layout's server reads a DER staple (see the header).
local STAPLES = {
  split = function(dir, name) return dir .. "/" .. name .. "/ocsp.der" end,
  haproxy = function(dir, name) return dir .. "/" .. name .. ".pem.ocsp" end,
}

local LAYOUTS = {
  -- nginx, Apache, Postfix, ...: separate chain and key, certbot's names
  split = function(dir, name, cert)
    return {
      { dir .. "/" .. name .. "/fullchain.pem", cert.pem, "0644" },
      { dir .. "/" .. name .. "/privkey.pem", cert.key_pem, "0600" },
    }
  end,
  -- HAProxy: one file with the chain then the key (crt-list / crt dir)
  haproxy = function(dir, name, cert)
    return { { dir .. "/" .. name .. ".pem", cert.pem .. cert.key_pem, "0600" } }
  end,
}

-- reload: an argv table of strings, or one command string split on white space
local function check_reload(v)
  if type(v) == "string" then
    if not v:find("%S") then return false, "is empty" end
    return true
  end
  if type(v) ~= "table" then return false, "must be an argv table or a command string, not " .. type(v) end
  if #v == 0 then return false, "is empty" end
  for k, a in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then
      return false, "must be a list of strings (argv), found key " .. tostring(k)
    end
    if type(a) ~= "string" then return false, string.format("[%d] must be a string, not %s", k, type(a)) end
  end
  return true
end

local SCHEMA = {
  dir = { type = "string", required = true },
  layout = { type = "string", default = "split",
    check = function(v) return LAYOUTS[v] ~= nil, "must be \"split\" or \"haproxy\"" end },
  reload = { type = "any", check = check_reload }, -- { "nginx", "-s", "reload" } or "nginx -s reload"
  reload_timeout = { type = "duration", default = "60s" },
  staple = { type = "boolean", default = true }, -- write the OCSP staple beside the certificate
  dir_mode = { type = "string", default = "0755",
    check = function(v) return v:match("^0?[0-7][0-7][0-7]$") ~= nil, "must be an octal string like \"0755\"" end },
}

local function safe_name(name)
  return (name:gsub("^%*", "wildcard_"))
end

-- A files target: what deploy.files makes. deploy.files returns a plain
-- function (an on_renewed hook: call it, wrap it, spawn it); the engine asks
-- M.target_of(fn) for the target behind it, whose id and files let it check at
-- start-up whether the files on disk are still the ones storage holds.
local Target = {}
Target.__index = Target
Target.__name = "certmaint.deploy.files"

local TARGETS = setmetatable({}, { __mode = "k" }) -- hook function -> its target

--- deploy.files(opts) -> an on_renewed(cert) function; deploy.target_of(it)
-- is its target: target.id ("files:<dir>" or "haproxy:<dir>"),
-- target:files(cert), target:current(cert).
function M.files(opts)
  local o = options.check(opts, SCHEMA, "certmaint.deploy.files", 2)
  if type(o.reload) == "string" then
    -- split on white space; no shell, no quoting: use an argv table for more
    local argv = {}
    for w in o.reload:gmatch("%S+") do argv[#argv + 1] = w end
    o.reload = argv
  elseif o.reload then
    o.reload = table.move(o.reload, 1, #o.reload, 1, {}) -- the caller's table may change later
  end
  local id = (o.layout == "haproxy" and "haproxy:" or "files:") .. o.dir
  local target = setmetatable({ id = id, o = o, reloading = false, again = false }, Target)
  local function on_renewed(cert) return target:deploy(cert) end
  TARGETS[on_renewed] = target
  return on_renewed
end

--- The target behind a function deploy.files returned, or nil (any other hook).
function M.target_of(fn)
  return TARGETS[fn]
end

function Target:__tostring() return "certmaint.deploy.files(" .. self.id .. ")" end

--- The files this target writes for cert: a list of { path, data, mode }.
function Target:files(cert)
  if not cert.key_pem then error("deploy: the certificate comes without its key", 0) end
  return LAYOUTS[self.o.layout](self.o.dir, safe_name(cert.names[1]), cert)
end

--- Are the files on disk exactly what deploying cert would write?
-- Returns true | false, why.
function Target:current(cert)
  for _, f in ipairs(self:files(cert)) do
    local data, err = core.read_file(f[1], #f[2] + 1)
    if not data then return false, err end
    if data ~= f[2] then return false, f[1] .. " differs from the certificate in storage" end
  end
  return true
end

function Target:run_reloads()
  local o = self.o
  local res, err, code
  repeat
    self.again = false
    res, err, code = require("certmaint.loop").exec(o.reload, { timeout = o.reload_timeout })
    if not res then
      core.log("error", "deploy_reload_failed", { command = table.concat(o.reload, " "), error = err, code = code })
    elseif res.status ~= 0 then
      err = res.status and ("exit status " .. tostring(res.status)) or ("signal " .. tostring(res.signal))
      core.log("error", "deploy_reload_failed", { command = table.concat(o.reload, " "), error = err,
        stderr = res.stderr })
      res = nil
    else
      core.log("info", "deploy_reloaded", { command = table.concat(o.reload, " ") })
    end
  until not self.again
  return res, err
end

function Target:reload()
  if not self.o.reload then return true end
  if self.reloading then self.again = true return true end
  self.reloading = true
  -- whatever happens (exec may raise outside a loop task), the next
  -- renewal must be able to reload again
  local ok, res, err = pcall(self.run_reloads, self)
  self.reloading = false
  if not ok then error(res, 0) end
  if not res then error("reload command failed: " .. tostring(err), 0) end
  return true
end

local staple_of -- (below)

local function write_file(self, path, data, mode)
  local parent = path:match("^(.*)/[^/]*$")
  local ok, err = core.mkdir_p(parent, self.o.dir_mode)
  if not ok then return nil, err end
  return core.write_atomic(path, data, mode)
end

--- Where this target writes cert's staple, or nil with staple = false.
function Target:staple_path(cert)
  if not self.o.staple then return nil end
  return STAPLES[self.o.layout](self.o.dir, safe_name(cert.names[1]))
end

-- Make the staple file say der (nil: no file). Returns changed | nil, err.
local function put_staple(self, path, der, name)
  local old = core.read_file(path, 65536 + 1)
  if der then
    if old == der then return false end
    local ok, err = write_file(self, path, der, "0644")
    if not ok then return nil, err end
    core.log("info", "staple_deployed", { name = name, path = path, bytes = #der })
    return true
  end
  local ok, err, code = core.remove(path)
  if not ok then
    if code == "ENOENT" then return false end
    return nil, err
  end
  core.log("info", "staple_removed", { name = name, path = path })
  return true
end

local PEM_CERT = "%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-\n?"

-- The staple file at path if it is a valid staple of cert now (verified
-- against the issuer, the chain's second certificate), else nil.
function staple_of(path, cert)
  local der = core.read_file(path, 65536 + 1)
  if not der then return nil end
  local n, issuer = 0, nil
  for block in cert.pem:gmatch(PEM_CERT) do
    n = n + 1
    if n == 2 then issuer = block break end
  end
  if not issuer then return nil end
  local info = core.ocsp_response_parse(der, cert.pem, issuer, core.now())
  if info and info.next_update and info.next_update > core.now() then return der end
  return nil
end

--- Write cert's files (and its staple, or remove a staple file left by the
-- certificate before it), then reload: raises "deploy: ..." on failure.
function Target:deploy(cert)
  for _, f in ipairs(self:files(cert)) do
    local ok, err = write_file(self, f[1], f[2], f[3])
    if not ok then error("deploy: " .. err, 0) end
    core.log("info", "deployed", { name = cert.names[1], path = f[1] })
  end
  local staple = self:staple_path(cert)
  if staple then
    -- without a staple attached (start-up redeploys before the OCSP pass),
    -- the one in place stays if it is this certificate's own and valid
    local der = (cert.ocsp and cert.ocsp.der) or staple_of(staple, cert)
    local ok, err = put_staple(self, staple, der, cert.names[1])
    if ok == nil then error("deploy: " .. err, 0) end
  end
  return self:reload()
end

--- Remove the temp files that writes into this target's folder left when
-- they never finished (a crash between write and rename: core/fileio.c's
-- ".<name>.tmp-<hex>"), last modified before `before` (core.now() time).
-- The storage's own are clean_temp's; these are on this host only, so every
-- instance's clean pass does its own. -> removed paths | nil, err
function Target:clean_temp(before)
  local found, err, code = core.list_files(self.o.dir, { side_files = true })
  if not found then
    if code == "ENOENT" then return {} end
    return nil, err
  end
  local removed = {}
  for _, rel in ipairs(found) do
    local path = self.o.dir .. "/" .. rel
    local st = core.stat(path)
    if st and st.type == "file" and st.modified < before and core.remove(path) then removed[#removed + 1] = path end
  end
  return removed
end

-- Is cert the certificate this target's files hold now? A staple written
-- beside another certificate would be served with the wrong one.
function Target:serves(cert)
  local first = self:files(setmetatable({ key_pem = "" }, { __index = cert }))[1]
  local data = core.read_file(first[1], #cert.pem + 65536)
  return data ~= nil and data:sub(1, #cert.pem) == cert.pem
end

--- Put der (a verified DER OCSP response for cert; nil removes the file)
-- where the server reads cert's staple, atomically, and reload when the
-- bytes changed. cert: as cache:get gives it (names, pem). Returns
-- "written" | "removed" | "unchanged" | "disabled" | "not_deployed" (the
-- files hold another certificate: nothing written); raises "deploy: ..."
-- when writing or the reload fails.
function Target:deploy_staple(cert, der)
  local path = self:staple_path(cert)
  if not path then return "disabled" end
  if der ~= nil and not self:serves(cert) then
    core.log("info", "staple_not_deployed", { name = cert.names[1], path = path,
      why = "the deployed certificate is another one" })
    return "not_deployed"
  end
  local changed, err = put_staple(self, path, der, cert.names[1])
  if changed == nil then error("deploy: " .. err, 0) end
  if not changed then return "unchanged" end
  self:reload()
  return der and "written" or "removed"
end

return M
