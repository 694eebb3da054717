<?lsp
-- The chat endpoint: a WebSocket on which every text message a member sends
-- goes to every member. Only pages of this server may connect (Origin).
page.members = page.members or {}
local members = page.members
local host = request:header("Host") or ""
local ws = ba.socket.req2sock(request, {protocols = {"chat"},
                                        origins = {"http://" .. host, "https://" .. host}})
if not ws then return end   -- refused (403) or gone: already answered

local function broadcast(text)
  for m in pairs(members) do
    if not m:write(text, true) then members[m] = nil end
  end
end

ws:event(function(ws)
  members[ws] = true
  local n = 0
  for _ in pairs(members) do n = n + 1 end
  broadcast("* someone joined; " .. n .. " here")
  while true do
    local msg, isText = ws:read()
    if not msg then break end
    if isText and #msg <= 4096 then broadcast(msg) end
  end
  members[ws] = nil
  broadcast("* someone left")
end, "s")
?>
