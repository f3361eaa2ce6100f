-- placeholder: the CLI
local M = {}
function M.main(args) print("certmaint", require("certmaint.core").version) return 0 end
return M
