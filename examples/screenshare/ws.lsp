<?lsp
-- The WebSocket endpoint: one per viewer, binary messages both ways
-- (docs/screen-protocol.md). No token, no socket: the upgrade is refused.
local role = app.access:role(request)
if not role then
  response:senderror(403, "a valid token is required")
  return
end
local ok, status, why = app.share:serve(request, role, app.access:allowed_origins(request))
if not ok and status then response:senderror(status, why) end
?>
