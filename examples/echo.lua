-- The two-line echo server: every connection gets a cosocket that sends back
-- what it reads. Try: nc 127.0.0.1 9090
local port = tonumber(arg[1]) or 9090
ba.socket.bind(port):event(function(s) while true do local c = s:accept() if not c then break end c:event(function(c) while true do local d = c:read() if not d then break end c:write(d) end end, "s") end end)
print("echo server on port " .. port)
