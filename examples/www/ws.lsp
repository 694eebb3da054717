<?lsp if request:header("Upgrade") then
  -- The WebSocket handshake, then an echo coroutine on the connection.
  local s = ba.socket.req2sock(request)
  if s then
    s:event(function(s)
      while true do
        local data, text = s:read()
        if not data then break end
        s:write(data, text)
      end
    end, "s")
  end
  return
end
response:include("_head.lsp") ?>
<h1>WebSocket echo</h1>
<input id="msg" value="hello"> <button id="send">send</button>
<pre id="log"></pre>
<script>
const log = (t) => document.getElementById("log").textContent += t + "\n";
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname);
ws.onopen = () => log("open");
ws.onmessage = (e) => log("echo: " + e.data);
ws.onclose = () => log("closed");
document.getElementById("send").onclick = () => ws.send(document.getElementById("msg").value);
</script>
</body></html>
