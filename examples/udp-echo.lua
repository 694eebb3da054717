-- UDP echo: every datagram goes back to its sender.
local port = tonumber(arg[1]) or 9091
local s = assert(ba.socket.udpcon(port))
print("udp echo on port " .. port)
while true do
  local data, ip, from = s:read(nil, true)
  if not data then break end
  s:sendto(data, ip, from)
end
