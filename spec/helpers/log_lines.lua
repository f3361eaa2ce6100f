-- Captured log lines (testing.capture_logs) searched by the specs.
local M = {}

--- How many of lines match the Lua pattern.
function M.count(lines, pattern)
  local n = 0
  for _, l in ipairs(lines) do if l:find(pattern) then n = n + 1 end end
  return n
end

--- The first line matching the pattern, or nil.
function M.first(lines, pattern)
  for _, l in ipairs(lines) do if l:find(pattern) then return l end end
end

return M
