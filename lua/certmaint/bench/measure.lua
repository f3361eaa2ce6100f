--- certmaint.bench.measure: timing and peak memory of one benchmark figure.
local core = require "certmaint.core"

local M = {}

--- Reset the peak RSS (VmHWM) to the current RSS (/proc/self/clear_refs, "5").
-- -> true | false where the kernel has no such file.
function M.reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  f:close()
  return ok and true or false
end

--- The process's peak RSS (VmHWM) in MiB, or nil.
function M.peak_mib()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local kib = text:match("VmHWM:%s*(%d+)")
  return kib and tonumber(kib) / 1024 or nil
end

--- RESULT <figure> <N> <seconds> <per_item_us> <peak_rss_MiB>
function M.result_line(figure, n, seconds, peak)
  local per = n > 0 and seconds / n * 1e6 or 0
  return ("RESULT %s %d %.6f %.3f %s"):format(figure, n, seconds, per, peak and ("%.1f"):format(peak) or "nan")
end

--- fn() timed on the monotonic clock, the peak RSS reset before it (after a
-- full collection, so garbage of the figures before does not count).
-- -> seconds, peak MiB, fn's results...
function M.timed(fn)
  collectgarbage()
  M.reset_peak()
  local t0 = core.monotonic()
  local r = table.pack(fn())
  local seconds = core.monotonic() - t0
  return seconds, M.peak_mib(), table.unpack(r, 1, r.n)
end

return M
