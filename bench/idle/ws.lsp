<?lsp
-- The idle benchmark's endpoint: the request's connection becomes a
-- WebSocket that echoes (the benchmark checks a sample) and otherwise waits.
local ws = ba.socket.req2sock(request)
if not ws then return end
ws:event(function(ws)
  while true do
    local data, isText = ws:read()
    if not data or not ws:write(data, isText) then break end
  end
end, "s")
?>
