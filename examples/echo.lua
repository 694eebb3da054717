-- The two-line echo server: every connection gets a cosocket that writes
-- back what it reads. Try: printf hello | nc 127.0.0.1 9090
local function echo(s) while true do local d = s:read() if not d or not s:write(d) then break end end end
ba.socket.bind(tonumber(arg[1]) or 9090):event(function(l) while true do local c = l:accept() if not c then break end c:event(echo, "s") end end)
