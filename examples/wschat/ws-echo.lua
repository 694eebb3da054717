-- A WebSocket echo server without the HTTP server: each connection's upgrade
-- request is read here and answered by ba.socket.wsupgrade. Every message
-- comes back as it was sent (text as text, binary as binary).
--   remora examples/wschat/ws-echo.lua [PORT [fragment] [max_message=N] [deflate=off]]
-- fragment echoes piece by piece (fragment mode), as the pieces arrive.
local port = tonumber(arg[1]) or 9001
local opts = {protocols = {"echo"}, origins = nil}
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=?(.*)$")
  if k == "fragment" then opts.fragment = true
  elseif k == "deflate" then opts.deflate = v ~= "off"
  elseif k == "origin" then opts.origins = {v}
  elseif k then opts[k] = tonumber(v) end
end

-- The request head: the header fields by name and the bytes after the head
-- (a client may send its first frame at once), or nil when the peer left.
local function read_request(s)
  local buf = ""
  repeat
    local d = s:read(10000)
    if not d or #buf > 16384 then return nil end
    buf = buf .. d
  until buf:find("\r\n\r\n", 1, true)
  local e = buf:find("\r\n\r\n", 1, true)
  local headers = {}
  for name, value in buf:sub(1, e + 1):gmatch("\n([^:\r\n]+):[ \t]*([^\r\n]-)[ \t]*\r") do headers[name] = value end
  return headers, buf:sub(e + 4)
end

local function echo(s)
  local headers, rest = read_request(s)
  if not headers then return end
  local ws = ba.socket.wsupgrade(s, headers, opts, rest)
  if not ws then return end
  local parts = {}   -- fragment mode: the pieces of the message so far
  while true do
    local data, isText, _, _, last = ws:read()
    if not data then break end
    if opts.fragment then
      parts[#parts + 1] = data
      data = last and table.concat(parts) or nil
      if last then parts = {} end
    end
    if data and not ws:write(data, isText) then break end
  end
end

ba.socket.bind(port, {intf = "127.0.0.1"}):event(function(l)
  while true do
    local c = l:accept()
    if not c then break end
    c:event(echo, "s")
  end
end)
print("ws-echo listening on " .. port)
