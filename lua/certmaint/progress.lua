--- A long pass's progress and duration: the start-up load, an OCSP pass, the
-- renewals (and deploys) a pass waits for.
--
-- The line on the terminal is the core's (core/term.h): drawn on stderr only
-- once the command turned it on (cli.lua: `run`, `once`, `renew`, `status`,
-- `check` when stderr is a terminal), at most 10 times a second, erased at
-- the end; never in a pipe or a log. What the log gets instead is the pass's
-- one summary line (`loaded`, `started`, `tick`), with :seconds().
--
--   local p <close> = progress.new("loading certificates", n)
--   p:step(k, failed_so_far) ... -- cheap: the core throttles the drawing
--   log("info", "loaded", { ..., seconds = p:seconds() })
local core = require "certmaint.core"

local M = {}

local P = {}
P.__index = P

--- A pass over `total` items (nil or 0: not known) named `label`.
function M.new(label, total)
  if type(label) ~= "string" then error("progress.new: label must be a string", 2) end
  return setmetatable({ label = label, total = total or 0, done = 0, failed = 0, t0 = core.monotonic() }, P)
end

--- n more items done (default 1); failed, when given, is how many of all
-- done so far failed. A total that grew meanwhile is set with p.total.
function P:step(n, failed)
  self.done = self.done + (n or 1)
  if failed then self.failed = failed end
  if self.done > self.total and self.total > 0 then self.total = self.done end
  core.progress(self.label, self.done, self.total, self.failed)
end

--- Seconds since new, to the millisecond (for the summary line).
function P:seconds()
  return math.floor((core.monotonic() - self.t0) * 1000 + 0.5) / 1000
end

--- The pass ended: its line is erased. Idempotent (also the __close).
function P:finish()
  if self.finished then return end
  self.finished = true
  core.progress_clear()
end
P.__close = P.finish

return M
