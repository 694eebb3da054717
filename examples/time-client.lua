-- Asks a time server (RFC 868) for the time, as Barracuda's documentation
-- does from a page: connect, read 4 bytes, convert with n2h.
local host, port = arg[1] or "127.0.0.1", tonumber(arg[2]) or 9037
local s, err = ba.socket.connect(host, port)
if not s then print("connect failed: " .. err) os.exit(1) end
local d
d, err = s:read(5000)
s:close()
if d and #d == 4 then
  local t = ba.socket.n2h(4, d) - 2208988800   -- 1900 epoch to 1970 epoch
  print("time: " .. os.date("!%Y-%m-%d %H:%M:%S", t) .. " UTC (" .. t .. ")")
else
  print("read failed: " .. tostring(err))
  os.exit(1)
end
