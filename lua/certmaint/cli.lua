--- The command line: certmaint COMMAND POLICY [...]
--
-- Exit status: 0 done; 1 a step failed (said on stderr); 2 the command line or
-- the policy is wrong (said with file:line).
local core = require "certmaint.core"
local issuers = require "certmaint.issuer"
local color = require "certmaint.color"

local M = {}

local USAGE = [[
usage: certmaint [--log-format text|json] [--log-level LEVEL] [--data-dir DIR] COMMAND POLICY [ARGS]

commands:
  run POLICY                     the daemon: load, obtain what is missing, then tick forever
  once POLICY                    one renew, OCSP and clean pass, then exit (cron, CI)
  check POLICY [--at TIME]       validate the policy and print what the passes would do
                                 (now, or at TIME), changing nothing
  status POLICY [--json] [--check] [--daemon] [--color=auto|always|never]
                                 one row per certificate: names, issuer, expiry, renewal,
                                 deploys, errors (coloured on a terminal unless NO_COLOR
                                 is set); --check: one line, exit 1 if anything
                                 needs attention, 2 if the daemon is stalled or gone
                                 (a monitoring check); --daemon: the daemon's health
  renew POLICY [NAME...] [--force]
                                 renew the named (default: all due) certificates now
  revoke POLICY NAME [--reason N]
                                 revoke a certificate at the CA that issued it, then replace it
  clean POLICY                   one clean pass
  test [BUSTED-OPTION...] SPEC...
                                 run busted on policy specs with this certmaint's
                                 modules on LUA_PATH/LUA_CPATH (no POLICY)

global options:
  --log-format text|json         one event a line as key=value (default) or JSON
  --log-level debug|info|warn|error
  --data-dir DIR                 storage root when the policy names no storage
                                 (default ./certmaint-data)
  -h, --help                     this text; `certmaint COMMAND --help` for one command
  --version

TIME is 2027-03-15, 2027-03-15T12:00:00Z, a Unix time, or +DURATION (+30d).
Only run creates a storage root that does not exist; the others exit 1.
Exit status: 0 done, 1 a step failed, 2 usage or policy error.
]]

local HELP = {
  run = [[
usage: certmaint run POLICY
Load the certificates the policy names from storage, obtain the missing ones,
then run the renew and clean passes on their intervals until SIGTERM/SIGINT.
SIGHUP re-reads POLICY; if it fails to load, the running policy stays.]],
  once = [[
usage: certmaint once POLICY
Load, redeploy what differs from storage, obtain what is missing, run one renew
pass, one OCSP pass (staples fetched, verified, stored; a revoked certificate
handled as on_revoked decides) and one clean pass, exit. Exit status 1 if
anything failed (a deploy, a revoked certificate's replacement, or a policy
hook too); a staple that could not be fetched is logged at error level.]],
  check = [[
usage: certmaint check POLICY [--at TIME]
Validate POLICY and print, for each certificate, what the next passes would do
and when (obtain / renew at T / clean / report), running the policy's real
hooks against the clock shifted to TIME. Changes nothing.]],
  status = [[
usage: certmaint status POLICY [--json] [--check] [--daemon] [--color=WHEN]
One row per managed certificate: names, issuer, not_after, time left, renewal
due and when, staple status ("(must-staple)" after it for a certificate with
the TLS Feature extension), what was deployed when (DEPLOYED), last error
(renewal or deploy) and retry state. --json prints a JSON array (names,
managed, issuer, serial, not_before, not_after, renewal_due, renewal_at, ocsp,
must_staple, last_error, attempts, next_attempt, time_left, deploy; each field
in certmaint(1), STATUS JSON). Exit status 0.

What needs attention is coloured: red for expired, missing, overdue, failing
(a last error, a failed deploy, a revoked staple, Must-Staple unstapled),
yellow for expiring inside the guard, due now, or an outdated deploy.
--color=WHEN: auto (default: only when stdout is a terminal and NO_COLOR is
unset or empty), always (also --color alone) or never.

--check makes it a monitoring check (Nagios style): one line on stdout, "certmaint
OK: ..." with exit status 0, or "certmaint WARNING: N of M certificates need
attention: NAME WHAT; ..." with exit status 1 when a certificate is not in
storage, expired, expires inside its guard, is past its renewal time by more
than two renew_check_intervals, has a last error (a failed renewal, a failing
hook), its last deploy failed, a deploy target has an older certificate, it is
Must-Staple without a valid staple, or a policy hook failed while status asked it. With --json as well,
the JSON goes to stdout and the line to stderr.
It also reads the health file `certmaint run` keeps (policy health_file; default
<storage root>/health/<host>.json): "certmaint CRITICAL: ..." with exit status 2
when a pass has not completed within watchdog_intervals of its intervals, or the
daemon stopped, died or stopped updating the file. No file (no daemon ever ran
here, e.g. a cron setup with `once`): not checked.

--daemon prints that health file (passes, when each last completed, stalled or
not) and what is wrong with it; with --json as one object {health_file,
problems, record}. Exit status 0.]],
  renew = [[
usage: certmaint renew POLICY [NAME...] [--force]
Renew the named certificates (default: every managed one) that are due, or all
of them with --force. One attempt each; exit 1 if any failed.]],
  revoke = [[
usage: certmaint revoke POLICY NAME [--reason N]
Revoke NAME's certificate at the CA that issued it (the issuer of the policy's
list whose storage folder holds it), then handle it as any revoked
certificate: the policy's on_revoked decides (default: obtain a new one and
deploy it; if that fails it is taken out of service).
--reason N: the RFC 5280 reason code sent to the CA (0 unspecified,
1 keyCompromise, 3 affiliationChanged, 4 superseded, 5 cessationOfOperation, ...).
With 1 (keyCompromise) the key is set aside in storage and the replacement
gets a fresh key, even with reuse_key = true.
Exit status 1 if the revocation or the replacement failed.]],
  clean = [[
usage: certmaint clean POLICY
Delete expired certificates past the grace period (with key and metadata) and
empty site folders. Never deletes what the policy manages.]],
  test = [[
usage: certmaint test [BUSTED-OPTION...] SPEC...
Run busted (--lua=lua5.4 unless an option names another) on the SPEC files or
folders with LUA_PATH_5_4 and LUA_CPATH_5_4 set to this certmaint's modules:
installed beside it (PREFIX/share/lua/5.4 and PREFIX/lib[/ARCH]/lua/5.4 for
PREFIX/bin/certmaint), or the sources' lua/ and the build's lua/ for the binary
in a build tree; your own LUA_PATH and LUA_CPATH follow them. So a spec's
require "certmaint.testing" works with no paths set by hand.
CERTMAINT_BUSTED names another busted. Exit status: busted's.]],
}

local function eprint(...)
  io.stderr:write(table.concat({ ... }, " "), "\n")
end

local function usage_error(msg)
  eprint("certmaint: " .. msg)
  eprint("try 'certmaint --help'")
  return 2
end

--- Parse TIME for --at; returns Unix seconds or nil, err.
function M.parse_time(s, now)
  if s:match("^%+") then
    local secs, err = require("certmaint.duration").parse(s:sub(2), "--at")
    if not secs then return nil, err end
    return now + secs
  end
  if s:match("^%d+$") then return tonumber(s) end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil, "bad time '" .. s .. "' (use 2027-03-15, 2027-03-15T12:00:00Z, Unix seconds or +30d)" end
  local h, mi, sec = 0, 0, 0
  if rest ~= "" then
    h, mi, sec = rest:match("^[T ](%d%d):(%d%d):?(%d*)Z?$")
    if not h then return nil, "bad time '" .. s .. "': expected THH:MM[:SS][Z] after the date" end
    sec = tonumber(sec) or 0
  end
  -- timegm without os.time's local-time interpretation: days from civil
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil, "bad date '" .. s .. "'" end
  local yy = (mo <= 2) and (y - 1) or y
  local era = (yy >= 0 and yy or yy - 399) // 400
  local yoe = yy - era * 400
  local mp = (mo + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + sec
end

local function left(secs)
  if not secs then return "-" end
  local neg = secs < 0
  secs = math.abs(secs)
  local s
  if secs >= 86400 then s = string.format("%dd%dh", secs // 86400, (secs % 86400) // 3600)
  elseif secs >= 3600 then s = string.format("%dh%dm", secs // 3600, (secs % 3600) // 60)
  elseif secs >= 60 then s = string.format("%dm%ds", secs // 60, math.floor(secs % 60))
  else s = string.format("%ds", math.floor(secs)) end
  return neg and ("-" .. s) or s
end
M.left = left

-- levels (optional): levels[row][column] "red" | "yellow" paints that cell
-- (after padding, so the columns stay aligned).
local function print_table(headers, rows, levels)
  local widths = {}
  for i, h in ipairs(headers) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do widths[i] = math.max(widths[i], #tostring(v)) end
  end
  local function line(cells, paint)
    local parts = {}
    for i, v in ipairs(cells) do
      parts[i] = (i == #cells) and tostring(v) or string.format("%-" .. widths[i] .. "s", tostring(v))
      if paint and paint[i] then parts[i] = color.paint(parts[i], paint[i]) end
    end
    io.stdout:write(table.concat(parts, "  "), "\n")
  end
  line(headers)
  for j, r in ipairs(rows) do line(r, levels and levels[j]) end
end

-- Run fn inside a loop task to completion (one-shot commands).
local function run_task(fn, ...)
  local loop = require "certmaint.loop"
  local task = loop.spawn(fn, ...)
  local _, why = loop.run_until(function() return task.done end)
  if not task.done then
    loop.cancel(task)
    return nil, "the command's task cannot finish (" .. tostring(why) .. ")"
  end
  if not task.ok then return nil, task.error end
  return table.unpack(task.results or { true })
end

local function make_engine(policy_path, opts)
  local sandbox = require "certmaint.sandbox"
  local policy, err = sandbox.load_policy(policy_path)
  if not policy then return nil, err end
  if policy.log then
    core.log_config { format = opts.log_format or policy.log.format, level = opts.log_level or policy.log.level }
  end
  local engine = require("certmaint.engine").new(policy, {
    data_dir = opts.data_dir,
    reload = function() return sandbox.load_policy(policy_path) end,
  })
  return engine
end

M.iso = require("certmaint.rfc3339").iso

local commands = {}

function commands.run(engine)
  collectgarbage("incremental")
  engine:run()
  return 0
end

function commands.once(engine)
  local ok, start, renew, ocsp, clean = run_task(function()
    -- the OCSP pass runs below, once; a saved back-off does not hold back
    -- what the operator (or cron) asks for now
    local s = engine:start { ocsp = false, restore_backoff = false }
    engine.metrics_active = true -- each pass writes policy.metrics.textfile
    local r = engine:tick("renew")
    local o = engine:tick("ocsp")
    local c = engine:tick("clean")
    engine:alerts_drain(60) -- notices the passes raised are told before the command exits
    return true, s, r, o, c
  end)
  if not ok then eprint("certmaint: " .. tostring(start)) return 1 end
  -- a staple that could not be fetched is an error in the log, not a failed
  -- run: the certificate is still served (and stapled while the old staple holds)
  local failed = (start.failed or 0) + (renew.failed or 0) + (ocsp.replace_failed or 0)
  local deploy_failed = (start.deploy_failed or 0) + (renew.deploy_failed or 0)
  io.stdout:write(string.format("loaded %d, obtained %d, renewed %d, reloaded %d, failed %d, deleted %d, "
    .. "deployed %d, deploy failed %d, stapled %d, staples failed %d, revoked %d\n",
    start.loaded or 0, start.obtained or 0, renew.renewed or 0, renew.reloaded or 0, failed, clean.deleted or 0,
    (start.deployed or 0) + (renew.deployed or 0), deploy_failed,
    (ocsp.refreshed or 0) + (ocsp.from_storage or 0), ocsp.failed or 0, ocsp.revoked or 0))
  -- a policy hook that failed (the default rule decided, a deploy hook
  -- raised) needs the operator as much as a failed renewal: cron tells them
  local hook_errors = engine.hooks.errors
  if hook_errors > 0 then
    local last = engine.hooks.last_failure
    eprint(string.format("certmaint: policy hooks failed %d time%s (last: %s: %s; see the log)", hook_errors,
      hook_errors == 1 and "" or "s", last and last.hook or "?", last and last.message or "?"))
  end
  return (failed > 0 or deploy_failed > 0 or hook_errors > 0) and 1 or 0
end

function commands.clean(engine)
  local ok, tick = run_task(function() engine:load_all { keys = false } return true, engine:tick("clean") end)
  if not ok then eprint("certmaint: " .. tostring(tick)) return 1 end
  io.stdout:write(string.format("deleted %d, kept %d, unparseable %d, staples deleted %d, CRLs deleted %d\n",
    tick.deleted, tick.kept, tick.unparseable, tick.staples_deleted or 0, tick.crls_deleted or 0))
  return 0
end

-- A status row's deploys as text: the DEPLOYED cell ("-" without on_renewed;
-- per target the time and serial deployed, "failed" or "outdated") and the
-- failures for LAST ERROR (nil when none).
local function deploy_text(list)
  if not list then return "-" end
  local cells, errs = {}, {}
  for _, d in ipairs(list) do
    local at = d.deployed_at and (M.iso(d.deployed_at) .. " " .. tostring(d.serial):sub(1, 8)) or "never"
    local cell = (d.state == "deployed" and at) or (d.state == "unknown" and "?") or (d.state .. " (" .. at .. ")")
    cells[#cells + 1] = (#list > 1) and (d.target .. " " .. cell) or cell
    if d.error then
      local e = "deploy to " .. d.target .. " failed: " .. d.error
      if d.next_attempt then e = string.format("%s (attempt %d, retry %s)", e, d.attempts or 0, M.iso(d.next_attempt)) end
      errs[#errs + 1] = e
    end
  end
  return table.concat(cells, "; "), (#errs > 0) and table.concat(errs, "; ") or nil
end
M.deploy_text = deploy_text

-- A status row's STAPLE cell: the staple's status and next update ("-"
-- without one), "(must-staple)" after it for a certificate with the TLS
-- Feature extension, whose clients refuse it unstapled.
function M.staple_text(r)
  local cell = r.ocsp and (r.ocsp.status .. " until " .. M.iso(r.ocsp.next_update)) or "-"
  if r.must_staple then cell = cell .. " (must-staple)" end
  return cell
end

-- At most this many certificates are named in --check's one line.
local CHECK_NAMED = 5

-- status --check: the one-line summary (Nagios style) and the exit status.
local function check_summary(health)
  local n, bad = health.certificates, health.attention
  if health.daemon and #health.daemon > 0 then
    -- the daemon itself (engine/watchdog.lua): CRITICAL, before any certificate
    local line = "certmaint CRITICAL: " .. table.concat(health.daemon, "; ")
    if #bad > 0 or health.hook_errors > 0 then
      local rest = check_summary({ certificates = n, attention = bad, hook_errors = health.hook_errors })
      line = line .. "; " .. rest:gsub("^certmaint WARNING: ", "")
    end
    return (line:gsub("[%c]+", " ")), 2
  end
  if #bad == 0 and health.hook_errors == 0 then
    return string.format("certmaint OK: %d certificate%s, none needs attention", n, n == 1 and "" or "s"), 0
  end
  local parts = {}
  for i, a in ipairs(bad) do
    if i > CHECK_NAMED then
      parts[#parts + 1] = string.format("and %d more", #bad - CHECK_NAMED)
      break
    end
    parts[#parts + 1] = a.name .. " " .. table.concat(a.reasons, ", ")
  end
  if health.hook_errors > 0 then
    parts[#parts + 1] = string.format("policy hooks failed %d time%s (see the log)", health.hook_errors,
      health.hook_errors == 1 and "" or "s")
  end
  local line = string.format("certmaint WARNING: %d of %d certificate%s need%s attention: %s", #bad, n,
    n == 1 and "" or "s", #bad == 1 and "s" or "", table.concat(parts, "; "))
  return (line:gsub("[%c]+", " ")), 1
end
M.check_summary = check_summary

function commands.status(engine, args)
  local json, check, daemon, color_mode = false, false, false, "auto"
  for _, a in ipairs(args) do
    local mode, cerr = color.parse_option(a)
    if mode then color_mode = mode
    elseif mode == false then return usage_error("status: " .. cerr)
    elseif a == "--json" then json = true
    elseif a == "--check" then check = true
    elseif a == "--daemon" then daemon = true
    else return usage_error("status: unexpected argument '" .. a .. "'") end
  end
  local now = core.now()
  if daemon and not check then
    -- the daemon's health file as it wrote it, with the verdict (engine/watchdog.lua)
    local problems, rec = engine:daemon_problems(now)
    local out = { health_file = engine:health_file(), problems = problems, record = rec or core.json_null }
    if json then
      io.stdout:write(assert(core.json_encode(out)), "\n")
    else
      io.stdout:write("health file: ", out.health_file, "\n")
      if not rec then io.stdout:write("no daemon record", #problems > 0 and (": " .. problems[1]) or "", "\n") end
      if rec then
        io.stdout:write(string.format("daemon: %s, pid %s on %s, started %s, updated %s\n", tostring(rec.state),
          tostring(rec.pid), tostring(rec.host), tostring(rec.started), tostring(rec.updated)))
        local rows = {}
        for _, p in ipairs(rec.passes) do
          rows[#rows + 1] = { tostring(p.pass), tostring(p.interval), tostring(p.completed),
            tostring(p.last_completed or "never"), p.stalled and ("stalled, " .. tostring(p.late) .. "s late") or "ok" }
        end
        print_table({ "PASS", "INTERVAL", "COMPLETED", "LAST COMPLETED", "STATE" }, rows)
      end
      for _, p in ipairs(problems) do io.stdout:write("problem: ", p, "\n") end
    end
    return 0
  end
  if check then
    local ok, health = run_task(function()
      engine:load_all { keys = false }
      engine:ari_refresh(now, nil, { fetch = false })
      if json then
        engine:attach_stored_staples(now) -- (no OCSP pass here: what storage holds)
        local ok, err = engine:status_json(now, io.stdout)
        if not ok then error(err, 0) end
      end
      local h = engine:health(now)
      h.daemon = engine:daemon_problems(now)
      return true, h
    end)
    if not ok then eprint("certmaint: status: " .. tostring(health)) return 1 end
    local line, code = check_summary(health)
    local out = json and io.stderr or io.stdout
    out:write(line, "\n")
    return code
  end
  if json then
    local ok, err = run_task(function()
      engine:load_all { keys = false }
      engine:ari_refresh(now, nil, { fetch = false })
      engine:attach_stored_staples(now) -- (no OCSP pass here: what storage holds)
      -- written in C a batch at a time: 100k rows never sit in memory as one tree
      return engine:status_json(now, io.stdout)
    end)
    if not ok then eprint("certmaint: status: " .. tostring(err)) return 1 end
    return 0
  end
  local ok, rows = run_task(function()
    engine:load_all { keys = false }
    engine:ari_refresh(now, nil, { fetch = false })
    engine:attach_stored_staples(now) -- (no OCSP pass here: what storage holds)
    return true, engine:status_rows(now)
  end)
  if not ok then eprint("certmaint: status: " .. tostring(rows)) return 1 end
  -- what needs attention in colour: on a terminal only (or as --color says)
  local painted = color.wanted(color_mode, os.getenv("NO_COLOR"), core.isatty(1))
  local out, levels = {}, {}
  for j, r in ipairs(rows) do
    if painted then
      local l = engine:cell_levels(r, now)
      -- NAMES ISSUER NOT_AFTER LEFT RENEW STAPLE DEPLOYED LAST_ERROR
      levels[j] = { l.names, nil, l.left, l.left, l.renew, l.staple, l.deployed, l.error }
    end
    local staple = M.staple_text(r)
    local err = r.last_error
    if err and r.attempts and r.attempts > 0 and r.next_attempt and r.next_attempt > 0 then
      err = string.format("%s (attempt %d, retry %s)", err, r.attempts, M.iso(r.next_attempt))
    end
    local deployed, deploy_err = deploy_text(r.deploy)
    if deploy_err then err = err and (err .. "; " .. deploy_err) or deploy_err end
    out[#out + 1] = {
      table.concat(r.names, ","), r.issuer and (r.issuer:match("CN=([^,]+)") or r.issuer) or "-",
      r.not_after and M.iso(r.not_after) or "-", r.not_after and left(r.not_after - now) or "-",
      (not r.not_after and "obtain") or (r.renewal_due and "now")
        or ((r.renewal_at and r.renewal_at ~= math.huge) and M.iso(r.renewal_at) or "never"),
      staple, deployed, err or "-",
    }
  end
  print_table({ "NAMES", "ISSUER", "NOT AFTER", "LEFT", "RENEW", "STAPLE", "DEPLOYED", "LAST ERROR" }, out,
    painted and levels or nil)
  return 0
end

function commands.check(engine, args)
  local at = core.now()
  local i = 1
  while i <= #args do
    if args[i] == "--at" and not args[i + 1] then
      return usage_error("check: --at needs a value (2027-03-15, 2027-03-15T12:00:00Z, Unix seconds or +30d)")
    elseif args[i] == "--at" then
      local t, err = M.parse_time(args[i + 1], core.now())
      if not t then return usage_error("check: " .. err) end
      at = t
      i = i + 2
    else
      return usage_error("check: unexpected argument '" .. args[i] .. "'")
    end
  end
  -- the real hooks, asked at the shifted time
  if at ~= core.now() then core.clock_set(at) end
  local ok, rows = run_task(function()
    engine:load_all()
    return true, engine:plan(at)
  end)
  if not ok then
    core.clock_set(nil)
    eprint("certmaint: check: " .. tostring(rows))
    return 1
  end
  io.stdout:write("policy ok: ", tostring(#engine.order), " certificates; issuer ", issuers.describe(engine.issuer),
    "; as of ", M.iso(at), "\n")
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = { table.concat(r.names, ","), r.action,
      r.when and (r.when == at and "now" or M.iso(r.when)) or "-", r.why or "" }
  end
  print_table({ "NAMES", "ACTION", "WHEN", "WHY" }, out)
  core.clock_set(nil)
  -- a row the policy or storage got wrong is a failed check
  for _, r in ipairs(rows) do
    if r.action == "error" then return 1 end
  end
  return 0
end

function commands.renew(engine, args)
  local force, names = false, {}
  for _, a in ipairs(args) do
    if a == "--force" then force = true
    elseif a:sub(1, 1) == "-" then return usage_error("renew: unknown option '" .. a .. "'")
    else names[#names + 1] = a end
  end
  local targets = {}
  if #names == 0 then
    for _, p in ipairs(engine.order) do targets[#targets + 1] = engine.entries[p] end
  else
    for _, n in ipairs(names) do
      local e = engine.entries[core.name_normalize(n) or n]
      if not e then return usage_error("renew: '" .. n .. "' is not a certificate the policy manages") end
      targets[#targets + 1] = e
    end
  end
  local ok, results = run_task(function()
    engine:load_all()
    engine:ari_refresh(core.now(), nil, { fetch = false }) -- the stored ARI windows decide too
    local res = {}
    local tick = {}
    local deploys = engine:open_collector(tick) -- the command ends once its deploys have run
    for _, e in ipairs(targets) do
      local cert = e.id and engine.cache:get(e.id, { pem = false })
      if force or not cert or engine:needs_renewal(cert, core.now()) then
        local r, c, code = engine:renew_once(e, cert and "renew" or "obtain")
        res[#res + 1] = { name = e.primary, result = r or "failed", detail = r and c.serial or tostring(type(c) == "table" and c.message or c), code = code }
        if r then engine:notify_renewed(e, c, r, deploys) end
      else
        res[#res + 1] = { name = e.primary, result = "not due", detail = "renewal at " .. M.iso(cert.renew_at) }
      end
    end
    engine:finish_collector(deploys)
    if (tick.deploy_failed or 0) > 0 then
      res[#res + 1] = { name = "(deploy)", result = "failed", detail = tick.deploy_failed .. " deploy(s) failed, see the log" }
    end
    return true, res
  end)
  if not ok then
    eprint("certmaint: " .. tostring(results))
    return 1
  end
  local failed = 0
  for _, r in ipairs(results) do
    io.stdout:write(string.format("%-40s %-10s %s\n", r.name, r.result, r.detail or ""))
    if r.result == "failed" then failed = failed + 1 end
  end
  return failed > 0 and 1 or 0
end

-- RFC 5280 section 5.3.1 reason codes (7 is unused); ACME (RFC 8555 section 7.6) takes these.
M.REVOKE_REASONS = { [0] = "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
  "cessationOfOperation", "certificateHold", nil, "removeFromCRL", "privilegeWithdrawn", "aACompromise" }

function commands.revoke(engine, args)
  local name, reason
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--reason" then
      local v = args[i + 1]
      local n = v and tonumber(v)
      if not n or math.type(n) ~= "integer" or not M.REVOKE_REASONS[n] then
        return usage_error("revoke: --reason needs an RFC 5280 reason code 0-10 other than 7 "
          .. "(1 keyCompromise, 4 superseded, 5 cessationOfOperation, ...), got " .. tostring(v))
      end
      reason = n
      i = i + 2
    elseif a:sub(1, 1) == "-" then
      return usage_error("revoke: unknown option '" .. a .. "'")
    elseif name then
      return usage_error("revoke: give exactly one NAME")
    else
      name, i = a, i + 1
    end
  end
  if not name then return usage_error("revoke: give exactly one NAME") end
  local e = engine.entries[core.name_normalize(name) or name]
  if not e then return usage_error("revoke: '" .. name .. "' is not a certificate the policy manages") end
  local ok, err = run_task(function()
    engine:load_all()
    if not e.id then return nil, "no certificate for " .. name .. " in storage" end
    -- the CA that issued it: the issuer whose folder holds it
    local folder = e.issuer_key or engine.issuer_key
    local iss = engine:issuer_for(folder)
    if not iss or not issuers.has(iss, "revoke") then
      return nil, "the issuer of " .. e.primary .. "'s certificate (" .. (iss and issuers.describe(iss) or folder)
        .. ") cannot revoke certificates"
    end
    local cert = engine.cache:get(e.id)
    local r, rerr, rcode = iss:revoke(cert, { storage = engine.storage, now = core.now(), reason = reason })
    if not r then
      return nil, "revoking " .. e.primary .. " (serial " .. cert.serial .. ") failed: "
        .. tostring(type(rerr) == "table" and rerr.message or rerr) .. (rcode and (" [" .. tostring(rcode) .. "]") or "")
    end
    core.log("info", "revoked_at_ca", { name = e.primary, serial = cert.serial, issuer = issuers.describe(iss),
      reason = reason and M.REVOKE_REASONS[reason] or nil })
    io.stdout:write(string.format("%s: revoked serial %s%s\n", e.primary, cert.serial,
      reason and (" (" .. M.REVOKE_REASONS[reason] .. ")") or ""))
    -- then as any revocation found (engine/revocation.lua): the policy's
    -- on_revoked decides, keyCompromise sets the key aside, "renew" replaces
    -- it now and takes it out of service if that fails
    local tick = {}
    local jobs = engine:open_collector(tick) -- the replacement's first attempt and its deploy
    local old_id = e.id
    local decision, herr = engine:handle_revoked(old_id, { status = "revoked", revoked_at = core.now(),
      reason = reason and M.REVOKE_REASONS[reason] or nil, source = "cli" }, jobs)
    engine:finish_collector(jobs)
    if not decision then return nil, herr end
    if decision == "keep" then
      io.stdout:write(string.format("%s: kept in service, revoked (on_revoked decided \"keep\")\n", e.primary))
      return true
    elseif decision == "remove" then
      io.stdout:write(string.format("%s: taken out of service (on_revoked decided \"remove\")\n", e.primary))
      return true
    end
    if not e.id or e.id == old_id then
      local st = engine.jobs:status("renew:" .. e.primary)
      return nil, "revoked, but obtaining a replacement failed: " .. tostring(st and st.last_error or "see the log")
        .. " (the certificate was taken out of service; the renew pass retries)"
    end
    local c = engine.cache:get(e.id, { pem = false })
    io.stdout:write(string.format("%s: replaced by serial %s\n", e.primary, c.serial))
    if (tick.deploy_failed or 0) > 0 then return nil, "the new certificate could not be deployed (see the log)" end
    return true
  end)
  if not ok then eprint("certmaint: revoke: " .. tostring(err)) return 1 end
  return 0
end

-- A storage root that does not exist is an error for every command but `run`
-- (a typo in the path must not pass for an empty store); `run` makes it, and
-- says so. check says the policy itself is fine.
local function storage_ready(engine, cmd)
  if not engine.storage.check_root then return true end
  local ran, r = run_task(function() return true, table.pack(engine.storage:check_root(cmd == "run")) end)
  if not ran then return nil, r end
  local ok, created, code = r[1], r[2], r[3]
  if not ok then
    if cmd == "check" and code == "ENOENT" then
      return nil, "the policy is ok, but " .. tostring(created) .. " (create it, or let `certmaint run` create it)"
    end
    return nil, created
  end
  if created then core.log("info", "storage_root_created", { storage = engine.storage:describe() }) end
  return true
end

--- main(args) -> exit code
function M.main(args)
  -- one-shot commands make short-lived garbage in bulk (status of 100k
  -- certificates): the generational collector keeps up with it for less;
  -- `run` switches back to incremental for the long haul
  collectgarbage("generational")
  local opts = {}
  local i = 1
  while i <= #args and args[i]:sub(1, 1) == "-" do
    local a = args[i]
    if a == "-h" or a == "--help" then io.stdout:write(USAGE) return 0
    elseif a == "--version" then io.stdout:write("certmaint ", core.version, "\n") return 0
    elseif a == "--log-format" or a == "--log-level" or a == "--data-dir" then
      local v = args[i + 1]
      if not v then return usage_error(a .. " needs a value") end
      if a == "--log-format" then
        if v ~= "text" and v ~= "json" then return usage_error("--log-format must be text or json") end
        opts.log_format = v
      elseif a == "--log-level" then
        if not ({ debug = 1, info = 1, warn = 1, error = 1 })[v] then
          return usage_error("--log-level must be debug, info, warn or error")
        end
        opts.log_level = v
      else
        opts.data_dir = v
      end
      i = i + 2
    else
      return usage_error("unknown option '" .. a .. "'")
    end
  end
  local cmd = args[i]
  if not cmd then io.stderr:write(USAGE) return 2 end
  if cmd == "help" then
    local what = args[i + 1]
    io.stdout:write((what and HELP[what]) or USAGE, "\n")
    return 0
  end
  if not commands[cmd] and cmd ~= "test" then return usage_error("unknown command '" .. cmd .. "'") end
  local rest = {}
  for j = i + 1, #args do rest[#rest + 1] = args[j] end
  for _, a in ipairs(rest) do
    if a == "-h" or a == "--help" then io.stdout:write(HELP[cmd], "\n") return 0 end
  end
  if cmd == "test" then return require("certmaint.testrun").main(rest) end -- no POLICY: busted on specs
  local policy_path = table.remove(rest, 1)
  if not policy_path then return usage_error(cmd .. ": missing POLICY file") end
  core.log_config { format = opts.log_format or "text", level = opts.log_level or "info" }
  -- long passes (the load, an OCSP pass, many renewals) show a progress line
  -- on stderr when it is a terminal; never in a pipe, a file or the journal
  core.progress_enable(true)

  local engine, err = make_engine(policy_path, opts)
  if not engine then
    eprint("certmaint: " .. tostring(err))
    return 2
  end
  local ready, rerr = storage_ready(engine, cmd)
  if not ready then
    eprint("certmaint: " .. cmd .. ": " .. tostring(rerr))
    return 1
  end
  local ok, code = xpcall(commands[cmd], debug.traceback, engine, rest)
  if not ok then
    eprint("certmaint: " .. cmd .. " failed: " .. tostring(code))
    return 1
  end
  return code
end

return M
