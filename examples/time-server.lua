-- The RFC 868 time service: each connection receives the seconds since
-- 1900-01-01 as a 4-byte network-order integer, then the server closes it.
local port = tonumber(arg[1]) or 9037
ba.socket.bind(port):event(function(listener)
  while true do
    local c = listener:accept()
    if not c then break end
    c:write(ba.socket.h2n(4, os.time() + 2208988800))
    c:close()
  end
end)
print("time server on port " .. port)
