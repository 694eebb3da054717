-- The Lua half of the firmware host (firmware.c): cosockets on the host's own
-- loop. A line server on port arg[2]: each line goes to the host's binary
-- protocol on port arg[1] (served from C, same loop, same thread) as an echo
-- request, and comes back with the host's statistics and a Lua timer's count.
local cport, lport = tonumber(arg[1]), tonumber(arg[2]) or 0
local h2n, n2h = ba.socket.h2n, ba.socket.n2h

-- One request on the binary protocol: returns status, body or nil, error.
local function ask(op, body)
  local s, err = ba.socket.connect("127.0.0.1", cport)
  if not s then return nil, err end
  local req = op .. (body or "")
  s:write(h2n(2, #req) .. req)
  local buf = ""
  while #buf < 2 or #buf < 2 + n2h(2, buf) do
    local d
    d, err = s:read(2000)
    if not d then s:close() return nil, err end
    buf = buf .. d
  end
  s:close()
  return buf:byte(3), buf:sub(4, 2 + n2h(2, buf))
end

local beats = 0
ba.timer(function() beats = beats + 1 return true end):set(50)

local function serve(s)
  local pending = ""
  while true do
    local d = s:read()
    if not d then break end
    pending = pending .. d
    for line in pending:gmatch("([^\n]*)\n") do
      local status, echo = ask("E", line)
      local _, stats = ask("S")
      if status ~= 0 then echo = "error:" .. tostring(echo) end
      s:write(string.format("echo=%s beats=%d %s\n", echo, beats, stats))
    end
    pending = pending:match("[^\n]*$")
  end
end

local l = assert(ba.socket.bind(lport, {intf = "127.0.0.1"}))
print("lua: line server on port " .. select(2, l:sockname()))
l:event(function(l) while true do local c = l:accept() if not c then break end c:event(serve, "s") end end)
