--- A real etcd for specs: started on 127.0.0.1 with free ports and a temp
-- data directory, stopped when the spec process ends (or by stop()).
--
--   local etcd = require "helpers.etcd"
--   local server = etcd.shared()      -- one per spec process, started on first use
--   server.url                        -- "http://127.0.0.1:<port>"
--   server:stop(); server:start()     -- the same data and ports again
--
-- Never port 2379: on a Debian machine with systemd, the etcd-server package
-- runs its own etcd there.  A missing binary is an error (deps.sh installs
-- etcd-server): the specs that need etcd fail, they are not skipped.
local core = require "certmaint.core"

local M = {}

M.BINARY = os.getenv("CERTMAINT_ETCD") or "/usr/bin/etcd"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Children run without the sanitizer preload of an ASan spec run (etcd is a
-- Go program, curl and sh need no ASan).
local CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "

local function execute(cmd) return os.execute(CLEAN_ENV .. "sh -c " .. sh_quote(cmd)) end

local function run(cmd)
  local p = assert(io.popen(CLEAN_ENV .. "sh -c " .. sh_quote(cmd), "r"))
  local out = p:read("a")
  p:close()
  return out
end

--- A free TCP port on 127.0.0.1 (bound, read back, closed).
function M.free_port()
  local id, port = assert(core.http_serve { listen = "127.0.0.1:0" })
  core.http_serve_close(id)
  return port
end

local Server = {}
Server.__index = Server

--- new([extra_args [, tls]]) -> a server, not started: data dir and ports
-- chosen; extra_args (a list) go on etcd's command line.  tls = {ca_file=,
-- cert_file=, key_file=} serves clients over https with client certificates
-- required (signed by ca_file); health checks then present tls.client_cert/
-- client_key.
function M.new(extra_args, tls)
  local f = io.open(M.BINARY, "rb")
  if not f then
    error("etcd binary " .. M.BINARY .. " not found: run scripts/deps.sh (etcd-server)", 2)
  end
  f:close()
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local dir = base .. "/certmaint-etcd-" .. core.sha256_hex(core.random_bytes(16)):sub(1, 12)
  assert(core.mkdir_p(dir, "0700"))
  local client, peer = M.free_port(), M.free_port()
  while peer == client do peer = M.free_port() end
  return setmetatable({ dir = dir, client_port = client, peer_port = peer,
    url = (tls and "https" or "http") .. "://127.0.0.1:" .. client, pid = nil,
    extra_args = extra_args or {}, tls = tls }, Server)
end

--- Is it answering /health?
function Server:healthy()
  local tls = ""
  if self.tls then
    tls = string.format("--cacert %s --cert %s --key %s ", sh_quote(self.tls.ca_file),
      sh_quote(self.tls.client_cert), sh_quote(self.tls.client_key))
  end
  return run("curl -sf --max-time 1 " .. tls .. self.url .. "/health 2>/dev/null"):find('"true"', 1, true) ~= nil
end

--- Start (or start again) and wait until healthy -> self.  A watchdog shell
-- kills etcd when this process is gone, however it ends.
function Server:start()
  if self.pid then return self end
  local peer = "http://127.0.0.1:" .. self.peer_port
  local cmd = table.concat({ sh_quote(M.BINARY), "--name", "spec", "--data-dir", sh_quote(self.dir .. "/data"),
    "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
    "--initial-cluster", "spec=" .. peer, "--log-level", "error" }, " ")
  for _, a in ipairs(self.extra_args) do cmd = cmd .. " " .. sh_quote(a) end
  if self.tls then
    cmd = cmd .. " --client-cert-auth --trusted-ca-file " .. sh_quote(self.tls.ca_file)
      .. " --cert-file " .. sh_quote(self.tls.cert_file) .. " --key-file " .. sh_quote(self.tls.key_file)
  end
  local log = sh_quote(self.dir .. "/etcd.log")
  local pidfile = self.dir .. "/etcd.pid"
  os.remove(pidfile)
  local watchdog = string.format("(%s >>%s 2>&1 & e=$!; echo $e >%s; while kill -0 %d 2>/dev/null "
    .. "&& kill -0 $e 2>/dev/null; do sleep 1; done; kill $e 2>/dev/null) >/dev/null 2>&1 </dev/null &",
    cmd, log, sh_quote(pidfile), core.getpid())
  execute(watchdog)
  local pid
  for _ = 1, 100 do
    local f = io.open(pidfile)
    pid = f and math.tointeger(tonumber(f:read("a"):match("%d+") or ""))
    if f then f:close() end
    if pid then break end
    execute("sleep 0.05")
  end
  assert(pid, "etcd did not start")
  self.pid = pid
  for _ = 1, 200 do
    if self:healthy() then return self end
    execute("sleep 0.1")
  end
  local f = io.open(self.dir .. "/etcd.log")
  local text = f and f:read("a") or ""
  if f then f:close() end
  self:stop()
  error("etcd at " .. self.url .. " did not become healthy: " .. text:sub(-2000))
end

--- Stop it (SIGTERM, then wait for the process to go) -> self.
function Server:stop()
  if not self.pid then return self end
  execute(string.format("kill %d 2>/dev/null; for i in $(seq 100); do kill -0 %d 2>/dev/null "
    .. "|| break; sleep 0.05; done; kill -9 %d 2>/dev/null", self.pid, self.pid, self.pid))
  self.pid = nil
  return self
end

--- Stop it and remove its data directory.
function Server:destroy()
  self:stop()
  execute("rm -rf " .. sh_quote(self.dir))
end

--- make_tls(dir) -> {ca_file, cert_file, key_file, client_cert, client_key}:
-- a throw-away CA (openssl), a server certificate for 127.0.0.1 and a client
-- certificate, all P-256, written into dir.  The server's certificate is for
-- clientAuth too: etcd 3.4's JSON gateway presents it to etcd's own gRPC
-- port, and with --client-cert-auth it is refused otherwise.
function M.make_tls(dir)
  local q = sh_quote
  local function f(name) return dir .. "/" .. name end
  local script = table.concat({
    "set -e; cd " .. q(dir),
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=spec-ca"
      .. " -keyout ca.key -out ca.pem",
    "printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext",
    "printf 'extendedKeyUsage=clientAuth\n' > client.ext",
    "for who in server client; do openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
      .. " -subj /CN=$who -keyout $who.key -out $who.csr;"
      .. " openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      .. " -extfile $who.ext -out $who.pem; done",
  }, "\n")
  local ok = execute(script .. " >/dev/null 2>&1")
  assert(ok, "openssl could not make the spec's TLS files")
  return { ca_file = f("ca.pem"), cert_file = f("server.pem"), key_file = f("server.key"),
    client_cert = f("client.pem"), client_key = f("client.key") }
end

local shared
local reaper

--- The spec process's etcd, started on first use, destroyed at exit.
function M.shared()
  if shared then return shared:start() end
  shared = M.new():start()
  reaper = setmetatable({}, { __gc = function() shared:destroy() end })
  M._reaper = reaper
  return shared
end

--- A storage on server s under a fresh prefix (specs never see each other's keys).
function M.storage(s, opts)
  local o = { endpoints = { s.url },
    prefix = "/spec-" .. core.sha256_hex(core.random_bytes(8)):sub(1, 12) }
  for k, v in pairs(opts or {}) do o[k] = v end
  return require("certmaint.storage.etcd").new(o)
end

return M
