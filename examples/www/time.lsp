<?lsp
-- A page as a client of another service, as in Barracuda's documentation:
-- connect, read 4 bytes with a timeout, convert with n2h. The read looks
-- blocking; it suspends only this page while the server goes on.
local s, err = ba.socket.connect("127.0.0.1", app.timeport)
local t
if s then
  local d
  d, err = s:read(5000)
  s:close()
  if d and #d == 4 then t = ba.socket.n2h(4, d) - 2208988800 end
end
response:include("_head.lsp")
?>
<h1>Time from a TCP service</h1>
<?lsp if t then ?>
<p>The time service on port <?lsp= app.timeport ?> says <b id="time"><?lsp= os.date("!%Y-%m-%d %H:%M:%S", t) ?> UTC</b>.</p>
<?lsp else ?>
<p>The time service did not answer: <?lsp= err ?></p>
<?lsp end ?>
</body></html>
