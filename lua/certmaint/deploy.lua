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
-- Every file is written atomically (temp, fsync, rename), keys 0600. The reload
-- command runs through certmaint.exec, so it never blocks the loop; renewals
-- that finish while a reload runs are folded into one more reload after it.
local core = require "certmaint.core"
local options = require "certmaint.options"

local M = {}

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
  dir_mode = { type = "string", default = "0755",
    check = function(v) return v:match("^0?[0-7][0-7][0-7]$") ~= nil, "must be an octal string like \"0755\"" end },
}

local function safe_name(name)
  return (name:gsub("^%*", "wildcard_"))
end

--- deploy.files(opts) -> an on_renewed(cert) function.
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
  local reloading, again = false, false

  local function run_reloads()
    local res, err, code
    repeat
      again = false
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
    until not again
    return res, err
  end

  local function reload()
    if not o.reload then return true end
    if reloading then again = true return true end
    reloading = true
    -- whatever happens (exec may raise outside a loop task), the next
    -- renewal must be able to reload again
    local ok, res, err = pcall(run_reloads)
    reloading = false
    if not ok then error(res, 0) end
    if not res then error("reload command failed: " .. tostring(err), 0) end
    return true
  end

  return function(cert)
    if not cert.key_pem then error("deploy: the certificate comes without its key", 0) end
    local name = safe_name(cert.names[1])
    for _, f in ipairs(LAYOUTS[o.layout](o.dir, name, cert)) do
      local path, data, mode = f[1], f[2], f[3]
      local parent = path:match("^(.*)/[^/]*$")
      local ok, err = core.mkdir_p(parent, o.dir_mode)
      if not ok then error("deploy: " .. err, 0) end
      ok, err = core.write_atomic(path, data, mode)
      if not ok then error("deploy: " .. err, 0) end
      core.log("info", "deployed", { name = cert.names[1], path = path })
    end
    return reload()
  end
end

return M
