<?lsp
-- The echo endpoint: every message comes back as it was sent (text as text,
-- binary as binary). The conformance tests drive it. Options: fragment=1 in
-- the query string echoes piece by piece (fragment mode); maxmsg=N lowers the
-- message limit.
local q = request:data()
local opts = {protocols = {"echo"}, fragment = q.fragment == "1",
              max_message = tonumber(q.maxmsg), max_frame = tonumber(q.maxmsg)}
local ws, err = ba.socket.req2sock(request, nil, opts)
if not ws then return end
ws:event(function(ws)
  while true do
    local data, isText = ws:read()
    if not data then break end
    if not ws:write(data, isText) then break end
  end
end, "s")
?>
