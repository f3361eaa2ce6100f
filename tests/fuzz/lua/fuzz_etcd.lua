--- fuzz_etcd: what an etcd v3 JSON gateway answers, through the real etcd
-- storage backend (lua/certmaint/storage/etcd.lua) with loop.http answered
-- from the input (fuzz_util's script; default status 200). The first byte
-- picks the storage call:
--   0 load  1 load_many  2 exists  3 list  4 list (recursive)  5 stat
--   6 store  7 delete  8 try_lock, then commit fenced by it, then unlock
--   9 commit (puts and deletes)  10 load as a user (authenticate first)
-- Each call must end in its documented result or nil, err, code.
local loop = require "certmaint.loop"
local util = require "fuzz_util"
local etcd = require "certmaint.storage.etcd"

local DEFAULTS = { status = 200, headers = { ["content-type"] = "application/json" } }

local function backend(opts)
  opts = opts or {}
  opts.endpoints = { "http://127.0.0.1:1", "http://127.0.0.1:2" }
  opts.timeout = 1
  opts.poll_interval = 0.01
  return etcd.new(opts)
end

local function check(what, v, err, code)
  util.check_failure(what, v, err, code)
  return v
end

local KEY = "certificates/acme-v02.api.letsencrypt.org-directory/example.com/example.com.crt"

local kinds = {
  [0] = function(s) check("load", s:load(KEY)) end,
  [1] = function(s)
    local found, failed = s:load_many { KEY, KEY:gsub("%.crt$", ".key"), "ocsp/example.com-abc" }
    if type(found) ~= "table" or type(failed) ~= "table" then
      error("fuzz: load_many did not return two tables (property broken)", 0)
    end
    for k, f in pairs(failed) do
      if type(k) ~= "string" or type(f) ~= "table" then error("fuzz: load_many failed entry (property broken)", 0) end
    end
  end,
  [2] = function(s)
    if type(s:exists(KEY)) ~= "boolean" then error("fuzz: exists did not answer a boolean (property broken)", 0) end
  end,
  [3] = function(s)
    local l = check("list", s:list("certificates", false))
    for _, k in ipairs(l or {}) do
      if type(k) ~= "string" then error("fuzz: list gave a key that is not a string (property broken)", 0) end
    end
  end,
  [4] = function(s) check("list", s:list("certificates", true)) end,
  [5] = function(s) check("stat", s:stat("certificates")) check("stat", s:stat(KEY)) end,
  [6] = function(s) check("store", s:store(KEY, "value")) end,
  [7] = function(s) check("delete", s:delete(KEY)) end,
  [8] = function(s)
    local lock = check("try_lock", s:try_lock("example.com"))
    if lock then
      check("commit", s:commit { put = { [KEY] = "v" }, fence = lock })
      s:unlock(lock)
    end
  end,
  [9] = function(s)
    check("commit", s:commit { put = { [KEY] = "v", ["a/b"] = "w" },
      delete = { "ocsp/x" } })
  end,
  [10] = function(_, chunks)
    local s = backend { username = "root", password = "pw" }
    check("load", s:load(KEY))
    return s
  end,
}

local real_http = loop.http

return function(data)
  if #data == 0 then return end
  local chunks = util.split(data:sub(2))
  local s = backend()
  loop.http = util.transport(chunks, DEFAULTS)
  local ok, err = pcall(util.task, function()
    local used = kinds[data:byte(1) % 11](s, chunks) or s
    -- close revokes the leases the call took: more answers from the script
    util.check_failure("close", used:close())
  end)
  loop.http = real_http
  if not ok then error(err, 0) end
end
