<?lsp
-- The upgrade, then two coroutines: WebSocket messages go to the TCP socket
-- as bytes, TCP bytes come back as binary messages. Either side ending
-- closes both; each write waits for its socket's queue, so a fast side never
-- buries a slow one.
if not request:header("Upgrade") then
  response:senderror(400, "a WebSocket endpoint")
  return
end
local ws = ba.socket.req2sock(request)
if not ws then return end
local host, port = app.host, app.port

ws:event(function(ws)
  local tcp, err = ba.socket.connect(host, port, {timeout = 3000})
  if not tcp then
    trace("wstunnel: " .. host .. ":" .. port .. ": " .. err)
    ws:close(1011, "upstream " .. err)
    return
  end
  tcp:event(function(tcp)          -- TCP -> WebSocket
    while true do
      local data = tcp:read()
      if not data or not ws:write(data) then break end
    end
    ws:close()
  end, "s")
  while true do                    -- WebSocket -> TCP
    local data = ws:read()
    if not data or not tcp:write(data) then break end
  end
  tcp:close()
end, "s")
?>
