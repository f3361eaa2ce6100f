--- Colour in what certmaint prints for a person (the `status` table): when
-- to use it, and how.
--
-- --color=auto (the default) colours only when the output is a terminal and
-- NO_COLOR is unset or empty (https://no-color.org); --color=always and
-- --color=never decide alone (a command-line choice overrides NO_COLOR, as
-- no-color.org asks). Never in a pipe or a file under auto.
local M = {}

M.MODES = { auto = true, always = true, never = true }

local SGR = { red = "\27[31m", yellow = "\27[33m" }
local RESET = "\27[0m"

--- Whether to colour: mode ("auto" | "always" | "never"), no_color (the
-- NO_COLOR variable's value or nil), is_tty (the output is a terminal).
function M.wanted(mode, no_color, is_tty)
  if not M.MODES[mode] then error("color.wanted: mode must be auto, always or never", 2) end
  if mode ~= "auto" then return mode == "always" end
  return is_tty and (no_color == nil or no_color == "")
end

--- text in level's colour ("red" | "yellow"; nil: as it is).
function M.paint(text, level)
  local sgr = level and SGR[level]
  if not sgr then
    if level ~= nil then error("color.paint: unknown level " .. tostring(level), 2) end
    return text
  end
  return sgr .. text .. RESET
end

--- Parse a --color option (args[i]): "--color" (always) or "--color=WHEN".
-- Returns mode | nil when args[i] is no --color option | false, message.
function M.parse_option(a)
  if a == "--color" then return "always" end
  local v = a:match("^%-%-color=(.*)$")
  if not v then return nil end
  if not M.MODES[v] then return false, "--color must be auto, always or never (got '" .. v .. "')" end
  return v
end

return M
