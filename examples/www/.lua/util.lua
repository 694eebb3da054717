-- A module of the app: `require "util"` finds it in .lua/.
local M = {}

function M.escape(s)
  return (tostring(s):gsub("[<>&\"]", {["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;"}))
end

function M.uptime(since)
  return string.format("%d s", os.time() - since)
end

return M
